"""mmdiffseg.apis.cli: the exit status of a failed write, and a blank one-name class list."""
import pytest

from mmdiffseg.apis import cli
from mmdiffseg.apis.io import OutputWriteError, UserInputError


def test_an_unwritable_output_exits_with_status_3(capsys):
    """OutputWriteError is status 3 (not 2, bad input), with one 'error:' line on stderr."""
    def main(argv):
        raise OutputWriteError('disk full')
    assert cli.run_cli(main, []) == 3
    assert capsys.readouterr().err == 'error: disk full\n'


def test_a_blank_single_name_is_refused():
    """A list of one blank name is refused, not turned into an empty class list."""
    with pytest.raises(UserInputError, match='name 1 is blank'):
        cli.class_list(' ')
    assert cli.class_list(' cat ,') == ['cat']
