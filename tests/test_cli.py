"""The command line: the library's own errors are one line, anything else (a bug) keeps its traceback."""
import warnings

import pytest

from spectral_prior import cli
from spectral_prior.cli import eval as eval_command
from spectral_prior.errors import InvalidInputError, MissingFileError, SpectralPriorError, UnknownNameError

EVAL_ARGS = ["eval", "--checkpoint", "x", "--data", "d", "--output", "o"]


@pytest.mark.parametrize(
    "error", [InvalidInputError("bad --crop 7"), UnknownNameError("no backbone 'x'; known: mst_s"), MissingFileError("no mask.mat")]
)
def test_library_errors_end_the_command_with_one_line(monkeypatch, capsys, error):
    def fail(args):
        raise error

    monkeypatch.setattr(eval_command, "run", fail)
    assert cli.main(EVAL_ARGS) == 2
    err = capsys.readouterr().err
    assert err == f"spectral-prior eval: error: {' '.join(str(error).split())}\n"
    assert "'" not in err.split("error: ")[1][:1]  # an unknown name is a sentence, not a quoted KeyError


@pytest.mark.parametrize("bug", [ValueError("shape bug"), KeyError("state"), OSError("disk"), RuntimeError("boom")])
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, bug):
    def fail(args):
        raise bug

    monkeypatch.setattr(eval_command, "run", fail)
    with pytest.raises(type(bug)):
        cli.main(EVAL_ARGS)


def test_library_errors_are_still_the_builtin_exceptions():
    assert issubclass(InvalidInputError, ValueError) and issubclass(UnknownNameError, KeyError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert all(issubclass(cls, SpectralPriorError) for cls in (InvalidInputError, UnknownNameError, MissingFileError))
    assert str(UnknownNameError("no preset 'x'")) == "no preset 'x'"


def test_warnings_are_one_line_without_a_source_line(monkeypatch, capsys):
    def warn(args):
        warnings.warn("the model was trained with another mask;\n    expect a loss", UserWarning)
        return 0

    monkeypatch.setattr(eval_command, "run", warn)
    assert cli.main(EVAL_ARGS) == 0
    assert capsys.readouterr().err == "spectral-prior eval: warning: the model was trained with another mask; expect a loss\n"
    with pytest.warns(UserWarning, match="outside the command"):  # the library's own warnings are left as they were
        warnings.warn("outside the command", UserWarning)


def test_ctrl_c_is_one_line_with_status_130(monkeypatch, capsys):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_command, "run", interrupt)
    assert cli.main(EVAL_ARGS) == 130
    assert capsys.readouterr().err == "spectral-prior eval: interrupted\n"
