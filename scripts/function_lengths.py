#!/usr/bin/env python3
"""Lists the longest functions in C++ sources (lines from the signature's `{` line to the closing
`}`), for keeping functions short. Usage: scripts/function_lengths.py [--top N] [DIR...]
(default: src). A heuristic brace matcher: comments, strings and character literals are skipped;
a body is a `{` at namespace level whose preceding text ends in `)` (plus qualifiers) and is not
a class, struct, enum, namespace or initializer; lambdas inside count toward their function."""
import re
import sys
from pathlib import Path


def strip(text):
    """Blanks out comments, string and char literals, keeping newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = text.find(")" + m.group(1) + '"', i) if m else -1
            j = n if end < 0 else end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(" " * (j + 1 - i)); i = j + 1
        else:
            out.append(c); i += 1
    return "".join(out)


def functions(path):
    text = strip(path.read_text(errors="replace"))
    results, stack, last = [], [], 0  # stack: (kind, start_line, name)
    for m in re.finditer(r"[{};]", text):
        ch, pos = m.group(), m.start()
        if ch == ";":
            last = pos + 1
            continue
        if ch == "{":
            head = text[last:pos]
            in_function = any(k == "f" for k, _, _ in stack)
            kind = "o"
            if not in_function:
                h = " ".join(head.split())
                if re.search(r"\)\s*(const|override|final|noexcept|mutable|->\s*[\w:<>,\s*&]+|\s)*$", h) and \
                        not re.search(r"\b(class|struct|enum|namespace|union)\b[^()]*$", h) and not h.endswith("="):
                    kind = "f"
                    name = re.search(r"([~\w:]+(?:operator\S*)?)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)[^()]*$", h)
                    start = text.count("\n", 0, pos) + 1
                    stack.append(("f", start, name.group(1) if name else h[-60:]))
                    last = pos + 1
                    continue
            stack.append((kind, 0, ""))
            last = pos + 1
        else:  # }
            if stack:
                kind, start, name = stack.pop()
                if kind == "f":
                    end = text.count("\n", 0, pos) + 1
                    results.append((end - start + 1, name, f"{path}:{start}"))
            last = pos + 1
    return results


def main(argv):
    top, dirs = 15, []
    it = iter(argv)
    for a in it:
        if a == "--top":
            top = int(next(it))
        else:
            dirs.append(a)
    files = [p for d in (dirs or ["src"]) for p in sorted(Path(d).rglob("*")) if p.suffix in (".cpp", ".h")]
    all_fns = [f for p in files for f in functions(p)]
    all_fns.sort(reverse=True)
    for length, name, where in all_fns[:top]:
        print(f"{length:5d}  {name}  {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
