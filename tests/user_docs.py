"""The user documentation: README.md and the topic pages under docs/. Tests of what the docs
show (commands, code, links) read them from here, so a section that moves between pages stays
checked."""
from sample_data import REPO


def user_doc_paths():
    """README.md, then every docs/*.md, as paths relative to the repository."""
    return ['README.md'] + [f'docs/{path.name}' for path in sorted((REPO / 'docs').glob('*.md'))]


def user_docs_text() -> str:
    """The text of every user doc, README.md first."""
    return '\n'.join((REPO / path).read_text() for path in user_doc_paths())
