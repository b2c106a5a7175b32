"""One thread at a time captures a U-Net's attention.

A capture is not thread-safe: every forward of the U-Net is a step of each session running on it
and the attention processors it installs are the U-Net's own, so two threads capturing one U-Net
(two engines built from one pipeline included) added each other's layers into their maps, or
stopped with a misleading nesting error. :func:`captured_by_this_thread` refuses the second
thread, naming the fix; sessions nested in one thread stay as they were.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator

#: per U-Net (the module under a ``torch.compile`` wrapper): the capturing thread and its depth
_CAPTURING: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


@contextlib.contextmanager
def captured_by_this_thread(unet) -> Iterator[None]:
    """Hold ``unet`` for this thread's capture session(s) for the duration of the block.

    Raises:
        RuntimeError: another thread is capturing ``unet`` now.
    """
    base = getattr(unet, '_orig_mod', unet)
    me = threading.get_ident()
    with _LOCK:
        owner, depth = _CAPTURING.get(base, (me, 0))
        if owner != me:
            raise RuntimeError(
                'another thread is capturing attention on this U-Net: a capture is not '
                'thread-safe (every forward of the U-Net is a step of each session on it, and '
                'its attention processors are shared); give each thread its own engine built '
                'from its own pipeline (DiffusionAttentionEngine.from_pretrained in each), or '
                'call the engine from one thread')
        _CAPTURING[base] = (me, depth + 1)
    try:
        yield
    finally:
        with _LOCK:
            if depth:
                _CAPTURING[base] = (me, depth)
            else:
                del _CAPTURING[base]
