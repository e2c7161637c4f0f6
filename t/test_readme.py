"""The README: one section per subject, in OpenResty's order, no block
pasted twice (issue 8, point 10)."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")

ORDER = ["Name", "Synopsis", "Description", "Directives", "Variables",
         "Metrics", "Operations", "Installation", "Testing", "Benchmarks",
         "Design", "Limitations"]


def _lines():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    # headings and text inside fenced code are not the README's own
    out, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return out


def test_each_section_once_and_in_order():
    lines = _lines()
    top = [l[3:].strip() for l in lines if l.startswith("## ")]
    assert len(top) == len(set(top)), f"a section appears twice: {top}"
    known = [t for t in top if t in ORDER]
    assert known == [t for t in ORDER if t in known], top
    for name in ("Name", "Synopsis", "Description", "Directives",
                 "Installation", "Testing", "Design", "Limitations"):
        assert name in top, f"no '## {name}' section"

    seen = set()
    parent = None
    for l in lines:
        if l.startswith("## "):
            parent = l[3:].strip()
        elif l.startswith("### "):
            sub = (parent, l[4:].strip())
            assert sub not in seen, f"'### {sub[1]}' twice under '## {parent}'"
            seen.add(sub)


def test_no_paragraph_pasted_twice():
    # paragraphs of some length; a short one ("See below.") may repeat
    text = "\n".join(_lines())
    paragraphs = [re.sub(r"\s+", " ", p).strip()
                  for p in re.split(r"\n\s*\n", text)]
    long_ones = [p for p in paragraphs if len(p) >= 120]
    dupes = {p[:80] for p in long_ones if long_ones.count(p) > 1}
    assert not dupes, f"paragraphs that appear twice: {sorted(dupes)}"
