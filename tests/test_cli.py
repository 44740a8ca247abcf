"""The command line: the library's own errors are one line, anything else (a bug) keeps its traceback."""
import pytest

from spectral_prior import cli, evaluate
from spectral_prior.errors import InvalidInputError, MissingFileError, SpectralPriorError, UnknownNameError

EVAL_ARGS = ["eval", "--checkpoint", "x", "--data", "d", "--output", "o"]


@pytest.mark.parametrize(
    "error", [InvalidInputError("bad --crop 7"), UnknownNameError("no backbone 'x'; known: mst_s"), MissingFileError("no mask.mat")]
)
def test_library_errors_end_the_command_with_one_line(monkeypatch, capsys, error):
    def fail(args):
        raise error

    monkeypatch.setattr(evaluate, "run", fail)
    assert cli.main(EVAL_ARGS) == 2
    err = capsys.readouterr().err
    assert err == f"spectral-prior eval: error: {' '.join(str(error).split())}\n"
    assert "'" not in err.split("error: ")[1][:1]  # an unknown name is a sentence, not a quoted KeyError


@pytest.mark.parametrize("bug", [ValueError("shape bug"), KeyError("state"), OSError("disk"), RuntimeError("boom")])
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, bug):
    def fail(args):
        raise bug

    monkeypatch.setattr(evaluate, "run", fail)
    with pytest.raises(type(bug)):
        cli.main(EVAL_ARGS)


def test_library_errors_are_still_the_builtin_exceptions():
    assert issubclass(InvalidInputError, ValueError) and issubclass(UnknownNameError, KeyError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert all(issubclass(cls, SpectralPriorError) for cls in (InvalidInputError, UnknownNameError, MissingFileError))
    assert str(UnknownNameError("no preset 'x'")) == "no preset 'x'"
