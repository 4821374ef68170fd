"""Every command's --help states each option's default once, in words."""
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv import bench, check, compare, exercise, explain, interop_cli, train, viz


def parsers():
    """(name, parser) for every command and every fastconv-viz subcommand."""
    yield "fastconv-train", train.build_parser()
    yield "fastconv-explain", explain.build_parser()
    yield "fastconv-compare", compare.build_parser()
    yield "fastconv-bench", bench.build_parser()
    yield "fastconv-export", interop_cli.build_export_parser()
    yield "fastconv-import", interop_cli.build_import_parser()
    yield "fastconv-check", check.build_parser()
    yield "fastconv-exercise", exercise.build_parser()
    for name, sub in viz.build_parser()[1].items():
        yield f"fastconv-viz {name}", sub


def options_with_a_default(parser):
    """Options the user may leave out and that are not plain on/off flags."""
    required_groups = [g for g in parser._mutually_exclusive_groups if g.required]
    for action in parser._actions:
        if (not action.option_strings or action.required or action.nargs == 0
                or any(action in g._group_actions for g in required_groups)):
            continue
        yield action


PARSERS = dict(parsers())


@pytest.mark.parametrize("command", PARSERS)
def test_each_option_states_its_default_once_in_words(command):
    parser = PARSERS[command]
    formatter = parser._get_formatter()
    for action in options_with_a_default(parser):
        text = formatter._expand_help(action)
        assert text.count("default") == 1, f"{command} {action.option_strings[0]}: {text!r}"
        assert "None" not in text and "[" not in text, f"{command} {action.option_strings[0]}: {text!r}"
    assert "(default: None)" not in parser.format_help()


def test_installed_train_help_has_no_doubled_default():
    script = Path(sys.executable).with_name("fastconv-train")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "(default: $FASTCONV_DATA, else the download cache)" in " ".join(out.split())
    assert "None" not in out and ") (default" not in " ".join(out.split())
