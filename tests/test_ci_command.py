"""CI runs the README's own test command: the command in ``.ci/run`` is the README's second
command under "The two commands", character for character."""
import re

from sample_data import REPO


def test_ci_runs_the_readme_test_command():
    section = (REPO / 'README.md').read_text().split('## The two commands', 1)[1]
    readme_command = re.findall(r'```bash\n(.*?)\n```', section, re.S)[1].strip()
    ci_lines = [line.strip() for line in (REPO / '.ci' / 'run').read_text().splitlines()
                if line.strip() and not line.startswith('#')]
    assert readme_command in ci_lines, (readme_command, ci_lines)
    assert ci_lines[-1] == readme_command  # the last thing CI does


def test_a_hanging_test_fails_instead_of_holding_ci(pytestconfig):
    """pytest-timeout (a test extra) is active with the limit set in pyproject.toml."""
    assert pytestconfig.pluginmanager.hasplugin('timeout')
    assert 0 < float(pytestconfig.getini('timeout')) <= 900
