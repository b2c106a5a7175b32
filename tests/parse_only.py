"""Scripts' command lines parsed, not run: each script's ``parse_args`` stops it once its
options are read (tests of the READMEs' commands and of the benchmarks' argument checks)."""
import json
import subprocess
import sys

from sample_data import REPO

#: runs each ``[script, *args]`` of argv[1] (JSON) up to its parsed options, in one interpreter;
#: prints per command its exit code and stderr (refused), or its parsed options and the type of
#: each integer option (parsed)
HARNESS = r'''
import argparse, contextlib, io, json, runpy, sys

class Parsed(Exception):
    pass

parse = argparse.ArgumentParser.parse_args
def parse_and_stop(self, args=None, namespace=None):
    raise Parsed(self, parse(self, args, namespace))
argparse.ArgumentParser.parse_args = parse_and_stop

def type_name(action):
    kind = action.type
    return None if kind is None else f'{getattr(kind, "__module__", "?")}.{kind.__qualname__}'

results = []
for script, *args in json.loads(sys.argv[1]):
    saved, sys.argv = list(sys.path), [script, *args]
    sys.path.insert(0, script.rsplit('/', 1)[0])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(script, run_name='__main__')
        result = dict(outcome='ran without parsing its options')
    except Parsed as done:
        parser, namespace = done.args
        result = dict(outcome='parsed', options={k: repr(v) for k, v in vars(namespace).items()},
                      types={a.option_strings[0]: type_name(a) for a in parser._actions
                             if a.option_strings and a.type is not None and not a.choices
                             and a.type not in (str, float) and 'Path' not in type_name(a)})
    except SystemExit as exit_:
        result = dict(outcome=f'exit {exit_.code}', stderr=err.getvalue().strip()[-600:])
    except Exception as exc:
        result = dict(outcome=repr(exc))
    sys.path[:] = saved
    results.append(result)
print(json.dumps(results))
'''


def parse_results(commands):
    """Each command (an argv list, script first, run from the repository) -> its harness result:
    ``outcome`` ('parsed', 'exit N', or the exception), with ``options`` / ``types`` when parsed
    and ``stderr`` when refused; one interpreter for all (the imports paid once)."""
    done = subprocess.run([sys.executable, '-c', HARNESS, json.dumps(commands)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
