"""Grand-challenge entry point: segment the one case under /input into /output (see --help)."""

from hieseg.cli.startup import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("infer"))
