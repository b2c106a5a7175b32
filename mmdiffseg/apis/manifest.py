"""The JSON-lines manifest of a resumable job's output folder (:mod:`.io`).

Its first line is a header with every setting that changes the output (model, generator config,
prompts, seed...); resuming into a folder whose header differs is refused, naming each setting.
Then one line per finished item, appended once per batch with one ``fsync`` (a kill tears at most
the last line, which reading drops). With several ranks each keeps its own
``manifest.rank<r>.jsonl``; rank 0 merges them into ``manifest.jsonl`` at the end.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..generators.base import older_labels_note
from ..provenance import describe, setting_differences
from .io import UserInputError, atomic_write, write_error

MANIFEST_NAME = 'manifest.jsonl'
MANIFEST_VERSION = 1


def read_manifest_file(path: Path, check_header: Callable[[Path, Dict], None] = lambda *_: None
                       ) -> Tuple[Optional[Dict], List[Tuple[int, Dict]], int]:
    """One manifest file as it is: its header (None without one; ``check_header(path, header)``
    is called on it first), ``(byte offset, record)`` of each finished item's line, and the end
    of its last complete line; a torn last line (a kill during the append, or a line being
    appended now) is left out. A damaged line before others is a :class:`UserInputError` naming
    the file."""
    raw = path.read_bytes()
    lines = raw.split(b'\n')
    good_end, records, header = 0, [], None
    for i, line in enumerate(lines):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            value = json.loads(line)
        except ValueError:
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1:]):
                raise UserInputError(f'{path}: line {i + 1} is not JSON; the manifest is '
                                     'damaged (not by an interrupted append)') from None
            break
        if i == len(lines) - 1:   # complete JSON but no newline: torn before the '\n'
            break
        if header is None:
            header = value
            check_header(path, header)
        else:
            records.append((good_end, value))  # good_end: where this line starts
        good_end += len(line) + 1
    return header, records, good_end


def _more_classes_note(tool: Optional[str], differing) -> str:
    """How a synthesize.py folder is resumed and takes more classes: its mask indices given as
    the ``--label-set``."""
    have = next((have for key, have, _ in differing if key == 'classes'), None)
    if tool != 'synthesize' or not isinstance(have, list):
        return ''
    return ('\nclasses: synthesize.py\'s masks index the --label-set, else the --config '
            "preset's classes where they hold every --classes name, else background + the "
            f'--classes; this folder\'s: --label-set "{",".join(have)}," resumes it with any '
            '--classes among them (a folder made with a --label-set holding every class to '
            'come, e.g. --label-set voc, takes later runs of other --classes).')


class Manifest:
    """The JSON-lines manifest of an output folder: a header line, then one line per finished
    item (``{"id": ..., "files": [...], ...}``)."""

    def __init__(self, folder, header: Dict[str, Any], rank: int = 0, world_size: int = 1):
        self.folder = Path(folder)
        self.header = self._recorded(header)
        name = MANIFEST_NAME if world_size == 1 else f'manifest.rank{rank}.jsonl'
        self.path = self.folder / name

    @staticmethod
    def _recorded(header: Dict[str, Any]) -> Dict[str, Any]:
        """``header`` as the manifest records it (JSON values, with the manifest's own keys)."""
        return json.loads(json.dumps(
            dict(header, manifest='mmdiffseg', version=MANIFEST_VERSION), sort_keys=True))

    def complete(self, header: Dict[str, Any]) -> None:
        """Take ``header`` completed once the model is loaded (a hub model's config hash and
        sampler, unknown before its first download): :meth:`start` writes it, and the folder's
        manifests are checked against it again."""
        completed = self._recorded(header)
        if completed == self.header:
            return
        self.header = completed
        for path in manifest_files(self.folder):
            read_manifest_file(path, self._check_header)

    def _take_known(self, found: Dict[str, Any]) -> None:
        """What an agreeing folder header knows and this run does not yet (the model's config
        hash, the sampler: a hub model not downloaded here; a rank that computes nothing never
        learns them) is taken, so this run's records and the merged manifest keep it."""
        own, theirs = self.header.get('model'), found.get('model')
        if isinstance(own, dict) and isinstance(theirs, dict) and own.get('config_hash') is None \
                and theirs.get('config_hash') and theirs.get('id') == own.get('id'):
            self.header['model'] = theirs
        if 'sampler' in self.header and self.header['sampler'] is None:
            self.header['sampler'] = found.get('sampler')

    # -- reading ------------------------------------------------------------------------------
    def _read(self, path: Path, repair: bool, since: int = 0) -> List[Dict]:
        """Records of one manifest file (those of the lines from byte ``since`` on) after
        checking its header; a torn last line (a kill during the append) is dropped, and cut off
        the file when ``repair``."""
        header, lines, good_end = read_manifest_file(path, self._check_header)
        if header is None:
            raise UserInputError(f'{path} has no header line; remove the folder or pick another '
                                 '--out')
        if repair and good_end < path.stat().st_size:
            with open(path, 'r+b') as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        return [record for start, record in lines if start >= since]

    def _check_header(self, path: Path, found: Dict) -> None:
        """Refuse a folder made by another tool (said alone: its other settings differ anyway),
        or by this tool with other settings (naming each that differs)."""
        tool, this_tool = found.get('tool'), self.header.get('tool')
        if tool and this_tool and tool != this_tool:
            raise UserInputError(f'--out {self.folder} was made by {tool}.py, not {this_tool}.py: '
                                 f'choose another --out (or rerun {tool}.py to resume it)')
        differing = list(setting_differences(found, self.header))
        if not differing:
            self._take_known(found)
            return
        raise UserInputError(
            f'refusing to resume into {self.folder}: its manifest ({path.name}) was made with '
            'different settings:\n'
            + '\n'.join(f'  {key}: folder has {describe(have)}, this run has {describe(want)}'
                         for key, have, want in differing)
            + older_labels_note(differing)
            + _more_classes_note(this_tool, differing)
            + '\nUse another --out folder, or rerun with the same settings.')

    def load(self) -> Dict[str, Dict]:
        """id -> record of every finished item in the folder (all rank files), checking headers
        and repairing this rank's torn last line. ``start_size`` is then this rank's file's
        size: this run's records follow it (:meth:`merge_ranks`)."""
        records: Dict[str, Dict] = {}
        for path in manifest_files(self.folder):
            for record in self._read(path, repair=(path == self.path)):
                records[record['id']] = record
        self.start_size = self.path.stat().st_size if self.path.exists() else 0
        return records

    # -- writing ------------------------------------------------------------------------------
    def start(self) -> None:
        """Create this rank's manifest with its header if absent."""
        if not self.path.exists():
            atomic_write(self.path, (json.dumps(self.header, sort_keys=True) + '\n').encode())

    def append_many(self, records: Sequence[Dict]) -> None:
        """One line per record, in one write and one ``fsync`` (a kill tears at most the last
        line, which :meth:`load` drops); after the header where the file was removed meanwhile
        (a file of records alone would be refused by every resume)."""
        if not records:
            return
        header = [] if self.path.exists() else [self.header]
        line = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in header + list(records)
                       ).encode()
        try:
            with open(self.path, 'ab') as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def merge_ranks(self, order: Sequence[str], fresh: Sequence = ()) -> List[Dict]:
        """Rank 0 after a distributed run: all records into ``manifest.jsonl`` (in ``order``),
        written atomically; the rank files are removed after. ``fresh``: ``(file name, size)``
        of each of this run's manifest files when it started (:meth:`load`): the records after
        it were made by this run and win over the others of their id (an item redone after a
        run with more or fewer ranks has its old record in a file read later)."""
        records = self.load()
        for name, since in fresh:
            path = self.folder / name
            for record in self._read(path, repair=False, since=since) if path.exists() else []:
                records[record['id']] = record
        rank = {item_id: i for i, item_id in enumerate(order)}
        merged = sorted(records.values(), key=lambda r: (rank.get(r['id'], len(rank)), r['id']))
        text = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in [self.header] + merged)
        atomic_write(self.folder / MANIFEST_NAME, text.encode())
        for path in manifest_files(self.folder, ranks_only=True):
            path.unlink()
        return merged


def manifest_files(folder: Path, ranks_only: bool = False) -> List[Path]:
    """The folder's manifest and its ranks' (``manifest.rank<r>.jsonl``), not a copy under
    another name (``manifest_old.jsonl`` would be read as the folder's)."""
    pattern = re.compile(r'manifest\.rank\d+\.jsonl' if ranks_only else
                         r'manifest(\.rank\d+)?\.jsonl')
    return sorted(p for p in Path(folder).glob('manifest*.jsonl') if pattern.fullmatch(p.name))
