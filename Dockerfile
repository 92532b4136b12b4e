# The BONBID-HIE challenge container: one case from /input to /output per run.
# The base image brings torch (a CUDA build by default; do_build.sh passes BASE_IMAGE to change it);
# everything else comes from requirements-inference.txt: what inference imports, nothing for
# training, plots or tests.
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system user && useradd --system --gid user --create-home user \
    && mkdir -p /opt/app /input /output /opt/ml/model \
    && chown user:user /opt/app /input /output /opt/ml/model

WORKDIR /opt/app
COPY requirements-inference.txt /opt/app/
RUN grep -v '^torch==' requirements-inference.txt > /tmp/requirements-no-torch.txt \
    && python -m pip install --requirement /tmp/requirements-no-torch.txt \
    && rm /tmp/requirements-no-torch.txt

COPY --chown=user:user resources /opt/app/resources
COPY --chown=user:user hieseg /opt/app/hieseg
COPY --chown=user:user model /opt/app/model
COPY --chown=user:user inference.py /opt/app/
# Compiled once here: the root file system is read-only at run time, so every container
# would otherwise compile the package again before its one case.
RUN python -m compileall -q /opt/app/hieseg

USER user
ENTRYPOINT ["python", "/opt/app/inference.py"]
