"""Every relative Markdown link of the user docs (README.md, docs/*.md) leads somewhere: to a file
that exists and, for ``page.md#anchor``, to a heading of that page (GitHub's anchors)."""
import re
from collections import Counter

from sample_data import REPO
from user_docs import user_doc_paths

FENCED = re.compile(r'^```.*?^```', re.S | re.M)


def prose(text: str) -> str:
    """The text without its fenced code blocks (a ``# comment`` there is no heading)."""
    return FENCED.sub('', text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to '-'."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(text: str) -> set:
    """The anchors of a page's headings; a repeated one gets -1, -2, ... as on GitHub."""
    seen, found = Counter(), set()
    for heading in re.findall(r'^#{1,6} (.+)$', prose(text), re.M):
        base = slug(heading)
        found.add(base if not seen[base] else f'{base}-{seen[base]}')
        seen[base] += 1
    return found


def broken_links(path: str, root=REPO) -> list:
    """The relative links of the doc at ``path`` (from ``root``) that lead nowhere."""
    page = root / path
    broken = []
    links_text = re.sub(r'`[^`\n]*`', '', prose(page.read_text()))   # code spans hold no link
    for target in re.findall(r'\]\(([^)\s]+)\)', links_text):
        if re.match(r'[a-z]+:', target):
            continue                                    # https:, mailto:
        file, _, anchor = target.partition('#')
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(f'{path}: {target} (no file)')
        elif anchor and anchor not in anchors(linked.read_text()):
            broken.append(f'{path}: {target} (no heading #{anchor})')
    return broken


def test_every_relative_link_of_the_docs_resolves():
    paths = user_doc_paths()
    assert len(paths) > 1 and 'docs/install.md' in paths
    assert [link for path in paths for link in broken_links(path)] == []


def test_the_link_check_itself(tmp_path):
    """GitHub's slugs, and a missing file or heading is reported."""
    assert slug('The engine (`mmdiffseg.attention`)') == 'the-engine-mmdiffsegattention'
    assert slug("Training and testing (MMSeg's tools and options)") == \
        'training-and-testing-mmsegs-tools-and-options'
    assert anchors('# A\n```bash\n# not a heading\n```\n## A\n') == {'a', 'a-1'}
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'p.md').write_text(
        '# Page\n[ok](p.md#page) [here](#page) [web](https://x.org/a#b)\n'
        '[gone](missing.md) [no heading](p.md#nothing) `a[0](1)`\n'
        '```\n[in code](nowhere.md)\n```\n')
    assert broken_links('docs/p.md', tmp_path) == [
        'docs/p.md: missing.md (no file)', 'docs/p.md: p.md#nothing (no heading #nothing)']
