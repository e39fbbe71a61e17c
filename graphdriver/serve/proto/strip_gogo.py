"""Copy containerd's .proto files with the gogoproto extensions removed (wire format unchanged).

usage: python strip_gogo.py SRC_PROTO DEST_PROTO [OLD_IMPORT=NEW_IMPORT ...]

gogoproto only steers Go code generation (custom names, nullability, stdtime); dropping its import, its
file/enum/value options and its field options leaves every message, field number and type as they were.
"""

import re
import sys


def strip(text: str, renames: dict[str, str]) -> str:
    text = re.sub(r'^\s*import\s+(weak\s+)?"gogoproto/gogo\.proto";\s*\n', "", text, flags=re.M)
    text = re.sub(r"^\s*option\s+\(gogoproto\.[^;]*;\s*\n", "", text, flags=re.M)
    # Field or enum-value options: drop gogoproto entries from [...] lists, and the list when it empties.
    def fix_opts(m: re.Match) -> str:
        kept = [o.strip() for o in m.group(1).split(",") if o.strip() and not o.strip().startswith("(gogoproto.")]
        return f" [{', '.join(kept)}]" if kept else ""
    text = re.sub(r"\s*\[([^\]]*\(gogoproto\.[^\]]*)\]", fix_opts, text)
    for old, new in renames.items():
        text = text.replace(f'import "{old}";', f'import "{new}";')
    if "gogoproto" in text:
        raise SystemExit("strip_gogo: a gogoproto reference is left over")
    return text


def main() -> None:
    src, dest, *pairs = sys.argv[1:]
    renames = dict(p.split("=", 1) for p in pairs)
    with open(src) as f:
        out = strip(f.read(), renames)
    with open(dest, "w") as f:
        f.write(out)


if __name__ == "__main__":
    main()
