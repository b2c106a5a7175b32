"""Two gloo ranks in forked processes, as a distributed tool run has them on one machine."""
import datetime
import multiprocessing


def _rank(rank, store, work, timeout, results):
    """Rank ``rank`` of a process group on ``store`` running ``work(rank, store.parent)``; what
    it returned, or
    its error as ``'<type>: <message>'`` (said in the test's failure, not in stderr alone)."""
    import torch.distributed as dist
    try:
        dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=timeout))
    except Exception as exc:  # noqa: B902
        results.put((rank, f'init_process_group: {type(exc).__name__}: {exc}'))
        return
    try:
        results.put((rank, work(rank, store.parent)))
    except Exception as exc:  # noqa: B902
        results.put((rank, f'{type(exc).__name__}: {exc}'))
    finally:
        dist.destroy_process_group()


def two_ranks(tmp_path, work, timeout=60):
    """``[work(0, folder), work(1, folder)]`` run by two ranks at once (a process group of that
    ``timeout``, in seconds); neither outlives the call. Each call has its store file in a new
    ``folder`` (``tmp_path/ranks<n>``): a reused store can still hold the last group's rank
    addresses, and a rank would dial a dead port."""
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    run = tmp_path / f'ranks{len(list(tmp_path.glob("ranks*")))}'
    run.mkdir()
    ranks = [context.Process(target=_rank, args=(r, run / 'store', work, timeout, results))
             for r in (0, 1)]
    for process in ranks:
        process.start()
    try:
        found = dict(results.get(timeout=120) for _ in ranks)
    finally:
        for process in ranks:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
    return [found[0], found[1]]
