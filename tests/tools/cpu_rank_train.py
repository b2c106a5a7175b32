"""``tools/train.py`` as one CPU rank under torchrun (tests of several training ranks on CPU).

mmengine's pytorch launcher cannot start a CPU rank: ``init_dist`` calls
``torch.cuda.set_device``. This joins the gloo process group first (as the offline tools do,
``mmdiffseg.apis.cli.start_launcher``), after which the Runner skips its own ``init_dist``, then
runs train.py's ``main`` with the command line it was given. The config must wrap the model for
CPU (``model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None)``).

    torchrun --nproc-per-node 2 tests/tools/cpu_rank_train.py CONFIG --launcher pytorch ...
"""
import sys

from e2e_helpers import load_tool

from mmdiffseg.apis.cli import start_launcher

if __name__ == '__main__':
    start_launcher('pytorch', 'cpu')
    load_tool('train').main(sys.argv[1:])
