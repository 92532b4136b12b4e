"""The documentation stays true: the commands that README.md and docs/*.md show parse, and their links resolve.

Commands are parsed, not run (``test/test_example.py`` runs the README's example). Every simple command of a
fenced block whose first word is ``python``, ``train.py``, ``inference.py``, ``hieseg-*`` or ``torchrun`` is split
as a shell splits it and mapped to its parser: ``python -m hieseg.<name>`` to ``hieseg.cli.<name>.build_parser()``,
``train.py`` to ``train``, ``inference.py`` to ``infer``, a ``hieseg-*`` console script to the command its entry point
in pyproject.toml starts (``hieseg-infer``: ``infer``); ``torchrun``'s own flags (those before the script) to
torchrun's parser, the rest to ``train``'s; ``python -m monai.bundle <command>``
to that function of MONAI's bundle command line. Every flag must be an option of its parser, a value given to an
option with choices must be one of them, and the ``--set`` settings of ``train`` and ``study`` must be settings
(:mod:`hieseg.config.settings`). ``[...]`` marks optional flags; ``<...>``, ``...`` and ``$VARIABLES`` stand for
values and are not checked. Every relative link and image must resolve, a ``#section`` to a heading of its page.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hieseg.config.overrides import parse_overrides
from hieseg.config.settings import ExperimentConfig
from hieseg.errors import HiesegError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 150
SETUP_COMMANDS = (
    ("pip install -r requirements.txt && python inference.py --input test/input --output out/sample "
     "--truth test/sample_truth/9f3b2c1a-4d5e-4f60-8a7b-0c1d2e3f4a5b.mha"),
    "pip install -r requirements.txt && python -m pytest",
)

CLI = REPO / "hieseg" / "cli"
NOT_COMMANDS = {"__init__", "common", "startup"}
"""Modules of hieseg/cli/ that are not commands; every other one is (``python -m hieseg.<name>``)."""
SCRIPTS = {"train.py": "train", "inference.py": "infer"}
NOT_OURS = {"pytest", "pip", "venv"}
"""``python -m`` of tools that are not this project's: not checked."""
SETTINGS_COMMANDS = {"train", "study"}
"""Commands whose ``--set`` takes ``section.key=value`` settings of the experiment configuration."""
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
DOCUMENTED_PROGRAM = re.compile(r"(?<![\w-])(python3?|torchrun|hieseg-[a-z]+|train\.py|inference\.py)(?![\w-])")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
NUMBER = re.compile(r"-\d")
PLAIN_VALUE = re.compile(r"[\w.:,/+-]+")
"""A value written out, not a placeholder such as ``<uuid>``, ``...`` or ``$VAR``."""
FENCE = re.compile(r"^(\s*)(```+|~~~+)(.*)$")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).*?\1")


@dataclass(frozen=True)
class Command:
    """One simple command of a fenced block, and where it is."""

    where: str
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.tokens)}"


# ---- reading the pages --------------------------------------------------------------------------------------------

def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def relative(path: Path) -> str:
    return path.resolve().relative_to(REPO).as_posix() if path.resolve().is_relative_to(REPO) else str(path)


def fenced_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number of its first line, its lines without the fence's indentation) of every fenced block."""
    lines = text.splitlines()
    inside, indent, fence, start, block = False, 0, "", 0, []
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if not inside:
            if match:
                inside, indent, fence, start, block = True, len(match.group(1)), match.group(2), number + 1, []
        elif match and match.group(2).startswith(fence[0]) and len(match.group(2)) >= len(fence) \
                and not match.group(3).strip():
            inside = False
            yield start, block
        else:
            block.append(line[indent:] if not line[:indent].strip() else line)


def prose_lines(text: str, keep_code: bool = False) -> Iterator[tuple[int, str]]:
    """The lines outside fenced blocks, inline code removed unless ``keep_code``."""
    inside, fence = False, ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match and not inside:
            inside, fence = True, match.group(2)[0]
        elif match and inside and match.group(2)[0] == fence and not match.group(3).strip():
            inside = False
        elif not inside:
            yield number, line if keep_code else INLINE_CODE.sub("", line)


def shell_lines(start: int, block: list[str]) -> Iterator[tuple[int, str]]:
    """The block's command lines, continuation lines (ending in a backslash) joined."""
    pending, first = "", start
    for offset, line in enumerate(block):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def simple_commands(line: str) -> list[list[str]]:
    """A shell line's simple commands (split at ``&&``, ``;``, ``|`` ...), leading ``NAME=value`` words dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="();&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    result = []
    for tokens in commands:
        while tokens and ASSIGNMENT.match(tokens[0]):
            tokens = tokens[1:]
        if tokens:
            result.append(tokens)
    return result


def documented_commands(text: str, name: str) -> tuple[list[Command], list[str]]:
    """The commands of every fenced block of a page that a check applies to, and the lines that cannot be split."""
    commands, unsplittable = [], []
    for start, block in fenced_blocks(text):
        for number, line in shell_lines(start, block):
            if not DOCUMENTED_PROGRAM.search(line):
                continue
            try:
                split = simple_commands(line)
            except ValueError as exc:  # an unbalanced quote: output or prose, unless a command starts the line
                words = line.split()
                while words and ASSIGNMENT.match(words[0]):
                    words = words[1:]
                if words and DOCUMENTED_PROGRAM.fullmatch(Path(words[0]).name):
                    unsplittable.append(f"{name}:{number}: cannot be split as a shell splits it ({exc}): {line}")
                continue
            commands += [Command(f"{name}:{number}", tuple(tokens)) for tokens in split if target(tokens)]
    return commands, unsplittable


# ---- what a command is --------------------------------------------------------------------------------------------

def commands() -> set[str]:
    """The command modules of hieseg/cli/."""
    return {path.stem for path in CLI.glob("*.py") if path.stem not in NOT_COMMANDS}


@functools.cache
def console_scripts() -> dict[str, str]:
    """pyproject.toml's console scripts, each to the command module its entry point starts (``hieseg-infer``: infer)."""
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[)", (REPO / "pyproject.toml").read_text(),
                        re.MULTILINE | re.DOTALL)
    scripts = {}
    for name, entry in re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section.group(1), re.MULTILINE):
        module, _, attribute = entry.partition(":")
        function = getattr(importlib.import_module(module), attribute)
        scripts[name] = function.args[0] if isinstance(function, functools.partial) else attribute
    return scripts


def target(tokens: list[str] | tuple[str, ...]) -> tuple[str, list[str]] | None:
    """(what runs, its arguments) for a command this file checks: ``cli:<module>``, ``torchrun``, ``monai.bundle``,
    or ``unknown`` (a ``python`` command of no known program, itself a problem); None for other programs."""
    program, args = Path(tokens[0]).name, list(tokens[1:])
    if program in ("python", "python3"):
        if args[:1] == ["-m"] and len(args) > 1:
            module = args[1]
            if "<" in module:  # a placeholder, as in python -m hieseg.<command>
                return None
            if module.startswith("hieseg."):
                return f"cli:{module.removeprefix('hieseg.')}", args[2:]
            if module == "monai.bundle":
                return "monai.bundle", args[2:]
            if module.split(".")[0] in NOT_OURS:
                return None
            return "unknown", [f"python -m {module}"]
        if args and Path(args[0]).name in SCRIPTS:
            return f"cli:{SCRIPTS[Path(args[0]).name]}", args[1:]
        return "unknown", [shlex.join(tokens[:2])]
    if program in SCRIPTS:
        return f"cli:{SCRIPTS[program]}", args
    if program.startswith("hieseg-"):
        if program not in console_scripts():
            return "unknown", [f"{program} (not a console script of pyproject.toml)"]
        return f"cli:{console_scripts()[program]}", args
    if program == "torchrun":
        return "torchrun", args
    return None


def command_problems(tokens: list[str] | tuple[str, ...]) -> list[str]:
    """What is wrong with one command line: flags its parser lacks, values outside their choices, unknown settings."""
    found = target(tokens)
    if found is None:
        return []
    kind, args = found
    if kind == "unknown":
        return [f"{args[0]}: not a command of this project (nor pytest, pip or monai.bundle)"]
    if kind == "monai.bundle":
        return bundle_problems(args)
    if kind == "torchrun":
        script = next((index for index, arg in enumerate(args) if arg.endswith(".py")), None)
        if script is None:
            return ["torchrun: no script to run"]
        problems = flag_problems(torchrun_parser(), args[:script], "torchrun")
        if Path(args[script]).name != "train.py":
            problems.append(f"torchrun runs {args[script]}; only train.py is made for it")
        return problems + cli_problems("train", args[script + 1:])
    return cli_problems(kind.removeprefix("cli:"), args)


def cli_problems(module: str, args: list[str]) -> list[str]:
    if module not in commands():
        return [f"hieseg.{module}: no such command (the commands: {', '.join(sorted(commands()))})"]
    parser = importlib.import_module(f"hieseg.cli.{module}").build_parser()
    problems = flag_problems(parser, args, module)
    if module in SETTINGS_COMMANDS:
        problems += settings_problems(module, args)
    return problems


def unbracketed(token: str) -> str:
    """A token without the ``[`` ``]`` that mark an optional part (``[--tta]``, ``[--model other/]``), keeping
    the brackets of a value (``train.patch_size=[64,64,32]``)."""
    if token.startswith("[-"):
        token = token[1:]
    while token.endswith("]") and token.count("]") > token.count("["):
        token = token[:-1]
    return token


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def flag_problems(parser: argparse.ArgumentParser, args: list[str], name: str) -> list[str]:
    """Flags of ``args`` that ``parser`` (or the sub-command chosen in ``args``) lacks, and values outside choices."""
    commands = next((action for action in parser._actions if isinstance(action, argparse._SubParsersAction)), None)
    options, chosen = options_of(parser), None
    tokens = [unbracketed(arg) for arg in args]
    problems = []
    for index, token in enumerate(tokens):
        if token == "--":
            break
        if commands is not None and chosen is None and token in commands.choices:
            chosen = token
            options = {**options, **options_of(commands.choices[token])}
            continue
        if not token.startswith("-") or token == "-" or NUMBER.match(token):
            continue
        flag, has_value, value = token.partition("=")
        action = options.get(flag)
        if action is None:
            where = f"{name} {chosen}" if chosen else name
            problems.append(f"{where}: no option {flag} (see its --help)")
            continue
        if action.choices is None or action.nargs == 0:
            continue
        if has_value:
            values = [value]
        elif action.nargs in (None, "?"):
            values = tokens[index + 1:index + 2]
        else:
            values = []
            for following in tokens[index + 1:]:
                if following.startswith("-"):
                    break
                values.append(following)
        for given in values:
            if PLAIN_VALUE.fullmatch(given) and given not in action.choices:
                problems.append(f"{name} {flag}: {given!r} is not one of {', '.join(map(str, action.choices))}")
    if commands is not None and chosen is None and any(token.startswith("-") for token in tokens):
        problems.append(f"{name}: no sub-command (one of {', '.join(commands.choices)})")
    return problems


def settings_problems(module: str, args: list[str]) -> list[str]:
    """The ``--set`` settings of a command, checked as the command checks them before any work."""
    pairs = []
    for index, arg in enumerate(args):
        arg = unbracketed(arg)
        if arg == "--set" and index + 1 < len(args):
            pairs.append(unbracketed(args[index + 1]))
        elif arg.startswith("--set="):
            pairs.append(arg.removeprefix("--set="))
    pairs = [pair for pair in pairs if "<" not in pair and "..." not in pair and "$" not in pair]
    try:
        ExperimentConfig().with_overrides(parse_overrides(pairs))
    except HiesegError as exc:
        return [f"{module} --set: {exc}"]
    return []


def torchrun_parser() -> argparse.ArgumentParser:
    from torch.distributed.run import get_args_parser

    return get_args_parser()


def bundle_problems(args: list[str]) -> list[str]:
    """``python -m monai.bundle <command> --flags``: a command of MONAI's bundle CLI, and flags its function takes."""
    if not args:
        return ["python -m monai.bundle: no command"]
    cli = importlib.import_module("monai.bundle.__main__")
    function = getattr(cli, args[0], None)
    if args[0].startswith("_") or not inspect.isfunction(function):
        return [f"python -m monai.bundle {args[0]}: not a command of MONAI's bundle command line"]
    parameters = inspect.signature(function).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return []  # it takes any --key value as an override of the bundle's configuration
    flags = [unbracketed(arg).partition("=")[0] for arg in args[1:] if unbracketed(arg).startswith("--")]
    return [f"python -m monai.bundle {args[0]}: no parameter {flag}" for flag in flags
            if flag[2:].replace("-", "_") not in parameters]


def page_problems(text: str, name: str) -> tuple[list[str], int]:
    """Every problem of a page's commands, and how many commands were checked."""
    commands, problems = documented_commands(text, name)
    for command in commands:
        problems += [f"{command}\n    {problem}" for problem in command_problems(command.tokens)]
    return problems, len(commands)


# ---- links --------------------------------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = INLINE_CODE.sub(lambda match: match.group(0).strip("`"), heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings."""
    return {slug(line.lstrip("#")) for _, line in prose_lines(path.read_text(), keep_code=True)
            if re.match(r"#{1,6} ", line)}


def link_problems(path: Path) -> list[str]:
    """Relative links and images of a page that lead nowhere."""
    problems = []
    for number, line in prose_lines(path.read_text()):
        for match in LINK.finditer(line):
            link = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
                continue
            file_part, _, anchor = link.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            where = f"{relative(path)}:{number}: {link}"
            if not destination.exists():
                problems.append(f"{where}: {relative(destination)} does not exist")
                continue
            if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                problems.append(f"{where}: no heading #{anchor} in {relative(destination)}")
    return problems


# ---- the tests ----------------------------------------------------------------------------------------------------

def test_every_command_the_pages_show_has_the_flags_it_uses() -> None:
    problems, checked = [], 0
    for path in documents():
        found, count = page_problems(path.read_text(), relative(path))
        problems += found
        checked += count
    assert not problems, "\n".join(problems)
    assert checked >= 60, f"only {checked} commands found: is the block reader broken?"


@pytest.mark.parametrize(("snippet", "problem"), [
    ("python train.py --data d --out runs/x --epoch 3", "train: no option --epoch"),
    ("python -m hieseg.predict --inptu cases --output masks", "predict: no option --inptu"),
    ("hieseg-infer --input in --outptu out", "infer: no option --outptu"),
    ("pip install -r requirements.txt && python inference.py --tresh 0.5", "infer: no option --tresh"),
    ("python -m hieseg.evaluate --pred p --truth t \\\n    [--compat bonbid2024]", "'bonbid2024' is not one of"),
    ("python train.py --data d --out runs/x --loss dice_focal", "'dice_focal' is not one of"),
    ("python -m hieseg.synthetic --out d --profile hard", "'hard' is not one of"),
    ("python train.py --data d --out runs/x --set train.epoch=3", "unknown config key 'train.epoch'"),
    ("python -m hieseg.study --data d --out o --set train.patch_size=[48,48,48] --set network.name=swinunetr",
     "multiple of 32"),
    ("python -m hieseg.nosuch --out x", "hieseg.nosuch: no such command"),
    ("hieseg-nosuch --out x", "hieseg-nosuch (not a console script of pyproject.toml)"),
    ("python scripts/train_everything.py", "not a command of this project"),
    ("hieseg-export bundle --model model/ --outdir b", "export bundle: no option --outdir"),
    ("hieseg-export --model model/ --out b", "export: no sub-command"),
    ("torchrun --standalone --nproc_per_node 2 train.py --data d --out o --bogus", "train: no option --bogus"),
    ("torchrun --nproc-per-nodes 2 train.py --data d --out o", "torchrun: no option --nproc-per-nodes"),
    ("CUDA_VISIBLE_DEVICES=0 torchrun --standalone inference.py", "only train.py is made for it"),
    ("python -m monai.bundle runn --config_file c.json", "not a command of MONAI's bundle command line"),
    ("hieseg-export nnunet --data d --out raw --dataset-id 502 --link hardlink", "'hardlink' is not one of"),
])
def test_the_command_checker_fails_on_a_broken_example(snippet: str, problem: str) -> None:
    page = f"Some text.\n\n```bash\n# a comment\n{snippet}\n```\n"
    problems, checked = page_problems(page, "snippet.md")
    assert checked == 1
    assert any(problem in found for found in problems), problems


def test_the_command_checker_passes_a_good_example_and_skips_what_is_not_ours() -> None:
    page = """
```bash
pip install -r requirements.txt && python -m pytest -m "not slow"
CUDA_VISIBLE_DEVICES=2,3 torchrun --standalone --nproc_per_node 2 train.py --data d --out runs/x \\
  --set train.patch_size=[64,64,32] --loss dice       # a comment
python -m hieseg.evaluate --pred p --truth t [--nsd-tolerance 2] [--compat bonbid2023]
hieseg-export nnunet --data d --out raw --dataset-id 502 --link hard
python -m monai.bundle run --config_file configs/inference.json --anything goes
python -m hieseg.synthetic --out data/one --container <uuid> --profile basic
nnUNetv2_train 502 3d_fullres 0; docker run --rm image
```

```
error: this is output, and it's not parsed: python -m hieseg.predict --made-up
```
"""
    problems, checked = page_problems(page, "good.md")
    assert problems == []
    assert checked == 5


def test_every_relative_link_and_image_resolves() -> None:
    problems = [problem for path in documents() for problem in link_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_link_checker_fails_on_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section (with `code`)\n")
    page = tmp_path / "page.md"
    page.write_text("[fine](other.md#a-section-with-code) [gone](missing.md) ![picture](img/none.png)\n"
                    "[no such section](other.md#nowhere) [web](https://example.org/x) `[code](not-a-link.md)`\n"
                    "```\n[in a block](not-a-link-either.md)\n```\n")
    problems = link_problems(page)
    assert len(problems) == 3, problems
    assert "missing.md does not exist" in problems[0] and "none.png does not exist" in problems[1]
    assert "no heading #nowhere" in problems[2]


def test_the_readme_keeps_its_two_setup_commands_and_ci_runs_the_second() -> None:
    text = README.read_text()
    block_lines = {line.strip() for _, block in fenced_blocks(text) for line in block}
    for command in SETUP_COMMANDS:
        assert command in block_lines, command
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    steps = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert "python -m pip install --quiet -r requirements.txt" in steps
    assert steps[-1] == SETUP_COMMANDS[1].split(" && ")[1], "the README's test command must be CI's last step"


def test_the_readme_is_read_in_five_minutes() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_readme_maps_every_page_of_the_manual() -> None:
    text = README.read_text()
    linked = {match.group(1).partition("#")[0] for _, line in prose_lines(text) for match in LINK.finditer(line)}
    pages = {relative(path) for path in DOCS.glob("*.md")}
    assert pages <= linked, f"not linked from README.md: {sorted(pages - linked)}"


def test_no_training_example_writes_into_the_shipped_model_folder() -> None:
    for path in documents():
        commands, _ = documented_commands(path.read_text(), relative(path))
        for command in commands:
            kind, args = target(command.tokens)
            if kind not in ("cli:train", "torchrun", "cli:study"):
                continue
            outs = [args[index + 1] for index, arg in enumerate(args[:-1]) if arg == "--out"]
            outs += [arg.removeprefix("--out=") for arg in args if arg.startswith("--out=")]
            assert not [out for out in outs if Path(out).parts[:1] == ("model",)], \
                f"{command}: model/ holds the shipped demo weights; write to a new folder such as runs/my-model"
