"""The scripts under ``tools/`` as modules (``from tool_modules import load_tool``): a test runs
their ``main(argv)`` or ``parse_args`` in its own process, saving a fresh interpreter's imports."""
import importlib.util
import sys

from sample_data import REPO


def load_tool(name: str):
    """``tools/<name>.py`` freshly executed as a module (``name`` may hold a sub-folder:
    ``dataset_converters/voc_aug``); its folder goes on ``sys.path`` for its sibling imports."""
    path = REPO / 'tools' / f'{name}.py'
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location('mmdiffseg_tools_' + name.replace('/', '_'),
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_converter(name: str):
    """``tools/dataset_converters/<name>.py`` as a module."""
    return load_tool(f'dataset_converters/{name}')
