#!/usr/bin/env python3
"""Builds detection corpora from real programs of several independent sources.

The sources are public collections that this repository never copies: the
caller fetches them and names the folder that holds them, each under its own
name (any that is missing is left out, and the report says so):

  exercism/<track>/     Exercism language tracks (git checkouts of
                        github.com/exercism/<track>): the example solutions
                        of the exercises (`.meta/`, `example/`).
  linguist/samples/     GitHub Linguist's sample files, one folder a language.
  piston/packages/      Piston's packages: each one's `test.*` program.
  rosetta/content/      Rosetta Code's task pages, as the RosettaGit mirror
                        (github.com/ad-si/RosettaGit) keeps them:
                        `tasks/*.md` and `drafts/*.md`, a `## <Language>`
                        heading over each language's solution. A solution's
                        code blocks (not its output, fenced as `txt`) make
                        one file, if it has 200 bytes or more.
  thealgorithms/<Repository>/
                        The Algorithms (github.com/TheAlgorithms/<Repository>,
                        e.g. Python, C-Plus-Plus): implementations of
                        algorithms, tests left out.
  sample-programs/archive/
                        The Sample Programs collection
                        (github.com/TheRenegadeCoder/sample-programs):
                        complete programs, one folder a language.
  benchmarks/<collection>/
                        Benchmark programs written in many languages:
                        checkouts of github.com/hanabi1224/Programming-Language-Benchmarks,
                        github.com/attractivechaos/plb2 and
                        github.com/kostya/benchmarks (any folder name), the
                        language read from the file extension.
  projects/<name>/      Language projects' own sources and tests, each a
                        checkout of the repository PROJECTS names (e.g.
                        projects/groovy: github.com/apache/groovy).

Sources are split, never files: `tune` (what the detector's model is trained
and calibrated on) holds exercism, linguist, piston and rosetta; `eval` (held out:
never trained or tuned on) holds sample-programs, `eval-algorithms` a
second held-out set, thealgorithms, and `eval-benchmarks` a third,
benchmarks. `dev` holds projects: code of the kind a user's repository
has (licence headers, tests, build scripts), never trained on, for
developing the grammar rules and signatures and finding where the model
fails; unlike the held-out sets it may be looked at freely. A file whose
text (blank space aside) is also in `tune` is dropped from the other sets. Debian
packages are a further pair of sets, built by tests/detection/corpus.sh.

Output, per set: `<out>/<set>/<language>/<n>` without file extensions, and
`index.tsv` (file, language, source, path). Files are 20 bytes to 64 KiB of
text, lines at most 1000 characters, nothing marked as generated.

Usage:
  tests/detection/sources.py --sources DIR [--out DIR] [--cap N]
  (or UNSANDBOX_DETECTION_SOURCES=DIR; --out defaults to
  target/detection-corpus/sources; --cap is files per language and source,
  default 150).
"""

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

# language -> file extensions that hold it (lower case, no dot).
EXTENSIONS = {
    "python": ["py"], "javascript": ["js", "mjs", "cjs"], "typescript": ["ts"],
    "coffeescript": ["coffee"], "ruby": ["rb"], "perl": ["pl", "pm"],
    "php": ["php"], "lua": ["lua"], "bash": ["sh", "bash"], "zsh": ["zsh"],
    "fish": ["fish"], "tcsh": ["tcsh", "csh"], "c": ["c"],
    "cpp": ["cpp", "cc", "cxx", "hpp"], "objective-c": ["m"],
    "fortran": ["f90", "f95", "f03", "f08", "f", "for"], "ada": ["adb", "ads"],
    "d": ["d"], "modula-2": ["mod", "def"], "go": ["go"], "rust": ["rs"],
    "java": ["java"], "kotlin": ["kt", "kts"], "scala": ["scala", "sc"],
    "groovy": ["groovy", "gvy"], "clojure": ["clj", "cljc"],
    "haskell": ["hs"], "ocaml": ["ml"], "erlang": ["erl", "escript"],
    "elixir": ["ex", "exs"], "r": ["r"], "pascal": ["pas", "pp", "lpr"],
    "cobol": ["cob", "cbl", "cobol"], "nim": ["nim"], "crystal": ["cr"],
    "tcl": ["tcl"], "scheme": ["scm", "ss", "sls", "sld"], "racket": ["rkt"],
    "common-lisp": ["lisp", "lsp", "cl"], "prolog": ["pl", "pro", "prolog"],
    "forth": ["fth", "fs", "4th", "forth"], "awk": ["awk"], "sed": ["sed"],
    "sql": ["sql"], "octave": ["m"], "assembly": ["asm", "nasm"],
    "csharp": ["cs"], "vala": ["vala"], "haxe": ["hx"], "elisp": ["el"],
    "brainfuck": ["b", "bf"], "jq": ["jq"], "raku": ["raku", "rakumod", "p6", "pm6"],
    "sml": ["sml", "sig"], "rexx": ["rexx", "rex"], "pike": ["pike", "pmod"],
    "algol68": ["a68", "alg"], "icon": ["icn"], "verilog": ["v"],
    "vhdl": ["vhd", "vhdl"], "newlisp": ["lsp"], "picolisp": ["l"],
    "m4": ["m4"], "basic-yabasic": ["yab"],
}

# Exercism track -> language.
EXERCISM = {
    "python": "python", "javascript": "javascript", "typescript": "typescript",
    "coffeescript": "coffeescript", "ruby": "ruby", "perl5": "perl",
    "php": "php", "lua": "lua", "bash": "bash", "c": "c", "cpp": "cpp",
    "objective-c": "objective-c", "fortran": "fortran", "d": "d", "go": "go",
    "rust": "rust", "java": "java", "kotlin": "kotlin", "scala": "scala",
    "groovy": "groovy", "clojure": "clojure", "haskell": "haskell",
    "ocaml": "ocaml", "erlang": "erlang", "elixir": "elixir", "r": "r",
    "free-pascal": "pascal", "cobol": "cobol", "nim": "nim",
    "crystal": "crystal", "tcl": "tcl", "scheme": "scheme",
    "racket": "racket", "common-lisp": "common-lisp", "prolog": "prolog",
    "forth": "forth", "awk": "awk", "sqlite": "sql", "csharp": "csharp",
    "haxe": "haxe", "emacs-lisp": "elisp", "jq": "jq", "raku": "raku",
    "sml": "sml", "rexx": "rexx", "x86-64-assembly": "assembly", "ada": "ada",
}

# Linguist sample folder -> language.
LINGUIST = {
    "Ada": "ada", "Awk": "awk", "Brainfuck": "brainfuck", "C": "c",
    "C++": "cpp", "C#": "csharp", "Clojure": "clojure", "COBOL": "cobol",
    "CoffeeScript": "coffeescript", "Common Lisp": "common-lisp",
    "Crystal": "crystal", "D": "d", "Emacs Lisp": "elisp", "Elixir": "elixir",
    "Erlang": "erlang", "Forth": "forth", "Fortran": "fortran",
    "Fortran Free Form": "fortran", "Go": "go", "Groovy": "groovy",
    "Haskell": "haskell", "Haxe": "haxe", "Java": "java",
    "JavaScript": "javascript", "jq": "jq", "Kotlin": "kotlin", "Lua": "lua",
    "M4": "m4", "Modula-2": "modula-2", "NewLisp": "newlisp", "Nim": "nim",
    "Objective-C": "objective-c", "OCaml": "ocaml", "Pascal": "pascal",
    "Perl": "perl", "PHP": "php", "PicoLisp": "picolisp", "Pike": "pike",
    "Prolog": "prolog", "Python": "python", "R": "r", "Racket": "racket",
    "Raku": "raku", "REXX": "rexx", "Ruby": "ruby", "Rust": "rust",
    "Scala": "scala", "Scheme": "scheme", "sed": "sed", "SQL": "sql",
    "Standard ML": "sml", "Tcl": "tcl", "Tcsh": "tcsh",
    "TypeScript": "typescript", "Verilog": "verilog", "VHDL": "vhdl",
    "fish": "fish", "Shell": "bash", "Vala": "vala", "Zsh": "zsh",
}

# Sample Programs folder -> language.
SAMPLE_PROGRAMS = {
    "ada": "ada", "algol68": "algol68", "awk": "awk", "bash": "bash",
    "brainfuck": "brainfuck", "c": "c", "c-plus-plus": "cpp",
    "c-sharp": "csharp", "clojure": "clojure", "cobol": "cobol",
    "coffeescript": "coffeescript", "crystal": "crystal", "d": "d",
    "elixir": "elixir", "erlang": "erlang", "forth": "forth",
    "fortran": "fortran", "go": "go", "groovy": "groovy",
    "haskell": "haskell", "haxe": "haxe", "java": "java",
    "javascript": "javascript", "kotlin": "kotlin", "lua": "lua", "m4": "m4",
    "modula2": "modula-2", "nim": "nim", "objective-c": "objective-c",
    "ocaml": "ocaml", "octave": "octave", "pascal": "pascal", "perl": "perl",
    "php": "php", "picolisp": "picolisp", "prolog": "prolog",
    "python": "python", "r": "r", "racket": "racket", "raku": "raku",
    "rexx": "rexx", "ruby": "ruby", "rust": "rust", "scala": "scala",
    "scheme": "scheme", "tcl": "tcl", "typescript": "typescript",
    "verilog": "verilog", "x86-64": "assembly", "lisp": "common-lisp",
}

# Piston package -> language.
PISTON = {
    "python": "python", "node": "javascript", "typescript": "typescript",
    "coffeescript": "coffeescript", "ruby": "ruby", "perl": "perl",
    "php": "php", "lua": "lua", "bash": "bash", "zsh": "zsh", "gcc": None,
    "fortran": "fortran", "dlang": "d", "go": "go", "rust": "rust",
    "java": "java", "kotlin": "kotlin", "scala": "scala", "groovy": "groovy",
    "clojure": "clojure", "haskell": "haskell", "ocaml": "ocaml",
    "erlang": "erlang", "elixir": "elixir", "rscript": "r", "pascal": "pascal",
    "cobol": "cobol", "nim": "nim", "crystal": "crystal", "racket": "racket",
    "lisp": "common-lisp", "prolog": "prolog", "forth": "forth",
    "sqlite3": "sql", "octave": "octave", "nasm": "assembly",
    "mono": "csharp", "dotnet": "csharp", "vlang": None, "emacs": "elisp",
    "brainfuck": "brainfuck", "jelly": None, "raku": "raku",
    "pure": None, "jq": None, "osabie": None, "iverilog": "verilog",
    "ponylang": None, "freebasic": None, "llvm_ir": None,
}

# Rosetta Code heading -> language. Dialects that the served toolchain runs
# as the language are folded in (MATLAB into octave, Icon's superset Unicon
# into icon, UNIX Shell into bash, Perl 6 into raku).
ROSETTA = {
    "Ada": "ada", "ALGOL 68": "algol68", "AWK": "awk", "UNIX Shell": "bash",
    "Bash": "bash", "bash": "bash", "bc": "bc", "Bc": "bc", "C": "c",
    "C++": "cpp", "C#": "csharp", "Clojure": "clojure", "COBOL": "cobol",
    "CoffeeScript": "coffeescript", "Common Lisp": "common-lisp",
    "Crystal": "crystal", "D": "d", "Emacs Lisp": "elisp", "Elixir": "elixir",
    "Erlang": "erlang", "Fish": "fish", "friendly interactive shell": "fish",
    "Forth": "forth", "Fortran": "fortran", "Go": "go", "Groovy": "groovy",
    "Haskell": "haskell", "Haxe": "haxe", "Icon": "icon", "Unicon": "icon",
    "Icon and Unicon": "icon", "Java": "java", "JavaScript": "javascript",
    "jq": "jq", "Korn Shell": "ksh", "Kotlin": "kotlin", "Lua": "lua",
    "M4": "m4", "m4": "m4", "MATLAB": "octave", "Octave": "octave",
    "Modula-2": "modula-2", "NewLISP": "newlisp", "newLISP": "newlisp",
    "Nickle": "nickle", "Nim": "nim", "Objective-C": "objective-c",
    "OCaml": "ocaml", "PARI/GP": "pari-gp", "Pascal": "pascal",
    "Free Pascal": "pascal", "Perl": "perl", "Perl 6": "raku", "Raku": "raku",
    "PHP": "php", "PicoLisp": "picolisp", "Pike": "pike", "Prolog": "prolog",
    "Python": "python", "R": "r", "Racket": "racket", "REXX": "rexx",
    "Ruby": "ruby", "Rust": "rust", "Scala": "scala", "Scheme": "scheme",
    "sed": "sed", "Sed": "sed", "SQL": "sql", "Standard ML": "sml",
    "C Shell": "tcsh", "Tcl": "tcl", "TypeScript": "typescript",
    "Vala": "vala", "Verilog": "verilog", "VHDL": "vhdl",
    "X86 Assembly": "assembly", "x86 Assembly": "assembly",
    "Yabasic": "basic-yabasic", "Zsh": "zsh",
}
OUTPUT_FENCES = {"", "txt", "text", "output"}
ROSETTA_MIN_BYTES = 200

# The Algorithms repository -> language.
THEALGORITHMS = {
    "C": "c", "C-Plus-Plus": "cpp", "C-Sharp": "csharp", "Clojure": "clojure",
    "Elixir": "elixir", "Fortran": "fortran", "Go": "go", "Haskell": "haskell",
    "Java": "java", "JavaScript": "javascript", "Kotlin": "kotlin", "Lua": "lua",
    "Nim": "nim", "OCaml": "ocaml", "PHP": "php", "Python": "python", "R": "r",
    "Ruby": "ruby", "Rust": "rust", "Scala": "scala", "TypeScript": "typescript",
}

# Benchmark collections: file extension -> language. Only the extensions
# these collections use for a served language (their `.v` is V, not
# Verilog; their `.fs` is F#, not Forth; their `.pl` is Perl).
BENCHMARKS = {
    "py": "python", "js": "javascript", "mjs": "javascript", "ts": "typescript",
    "rb": "ruby", "pl": "perl", "php": "php", "lua": "lua", "sh": "bash",
    "c": "c", "cpp": "cpp", "cc": "cpp", "cs": "csharp", "java": "java",
    "kt": "kotlin", "scala": "scala", "go": "go", "rs": "rust", "d": "d",
    "nim": "nim", "cr": "crystal", "ml": "ocaml", "hs": "haskell",
    "ex": "elixir", "exs": "elixir", "erl": "erlang", "f90": "fortran",
    "hx": "haxe", "cl": "common-lisp", "lisp": "common-lisp",
    "rkt": "racket", "scm": "scheme", "ss": "scheme", "sml": "sml",
    "tcl": "tcl", "vala": "vala", "b": "brainfuck", "bf": "brainfuck",
}

# Language project (folder under projects/) -> (its repository, language,
# folders read, folders left out). None is packaged in a held-out Debian
# package (Crystal's `samples/` is Debian's crystal-samples: left out).
PROJECTS = {
    "crystal": ("crystal-lang/crystal", "crystal", ["spec/", "src/"], ["src/lib_c/"]),
    "coffeescript": ("jashkenas/coffeescript", "coffeescript",
                     ["src/", "test/", "documentation/examples/"], []),
    "vala": ("GNOME/vala", "vala", [""], []),
    "sbcl": ("sbcl/sbcl", "common-lisp",
             ["src/code/", "src/compiler/", "src/pcl/", "contrib/", "tests/"], []),
    "ohmyzsh": ("ohmyzsh/ohmyzsh", "zsh", ["lib/", "plugins/", "tools/"], []),
    "groovy": ("apache/groovy", "groovy", ["src/", "subprojects/"], []),
}

SETS = {"exercism": "tune", "linguist": "tune", "piston": "tune",
        "rosetta": "tune", "sample-programs": "eval",
        "thealgorithms": "eval-algorithms", "benchmarks": "eval-benchmarks",
        "projects": "dev"}
GENERATED = re.compile(r"do not edit|generated by|automatically generated|autogenerated", re.I)
NOT_CODE = re.compile(r"(^|/)(test|tests|spec|specs)(/|$)|(_|-|\b)(test|spec)s?\.[^/]*$|^test[_-][^/]*$", re.I)


def ext_of(path):
    name = path.name
    return name.rsplit(".", 1)[1].lower() if "." in name else ""


def acceptable(data):
    if not 20 <= len(data) <= 65536 or b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(len(line) > 1000 for line in text.splitlines()):
        return None
    if GENERATED.search("\n".join(text.splitlines()[:12])):
        return None
    if len(text.split()) < 3:
        return None
    return text


def exercism(root):
    for track in sorted(os.listdir(root)):
        language = EXERCISM.get(track)
        if not language:
            continue
        exts = EXTENSIONS[language]
        for path in sorted(Path(root, track, "exercises").rglob("*")):
            rel = path.relative_to(Path(root, track)).as_posix()
            if not path.is_file() or ext_of(path) not in exts:
                continue
            if "/.meta/" not in rel and "/example/" not in rel:
                continue
            if NOT_CODE.search(rel.split("/.meta/")[-1]):
                continue
            yield language, f"exercism/{track}", rel, path


def linguist(root):
    base = Path(root, "samples")
    for folder, language in sorted(LINGUIST.items()):
        for path in sorted(Path(base, folder).rglob("*")):
            if path.is_file():
                yield language, "linguist", path.relative_to(base).as_posix(), path


def sample_programs(root):
    for letter in sorted(Path(root, "archive").iterdir()):
        for folder in sorted(letter.iterdir()):
            language = SAMPLE_PROGRAMS.get(folder.name)
            if not language:
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and ext_of(path) in EXTENSIONS[language]:
                    yield language, "sample-programs", f"{folder.name}/{path.name}", path


def piston(root):
    for package in sorted(Path(root, "packages").iterdir()):
        language = PISTON.get(package.name)
        if not language:
            continue
        for path in sorted(package.glob("*/test.*")):
            yield language, "piston", path.relative_to(root).as_posix(), path


def rosetta(root):
    """Yields each language's solution of each page as a text of its own."""
    for page in sorted(Path(root, "content").glob("*/*.md")):
        rel = page.relative_to(root).as_posix()
        language, blocks, fence = None, {}, None
        for line in page.read_text(errors="replace").splitlines():
            if fence is not None:
                if line.startswith("```"):
                    fence = None
                elif fence:
                    blocks.setdefault(language, []).append(line)
            elif line.startswith("```"):
                tag = line[3:].strip().lower()
                fence = language is not None and tag not in OUTPUT_FENCES
            elif line.startswith("## "):
                language = ROSETTA.get(line[3:].strip())
        for language, lines in sorted(blocks.items()):
            text = "\n".join(lines) + "\n"
            # A fragment (a REPL line, a call of a library function) is
            # not a program; the Debian sets skip files this short too.
            if len(text.encode()) >= ROSETTA_MIN_BYTES:
                yield language, "rosetta", f"{rel}#{language}", text


def thealgorithms(root):
    for repository, language in sorted(THEALGORITHMS.items()):
        base = Path(root, repository)
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base).as_posix()
            if path.is_file() and ext_of(path) in EXTENSIONS[language] and not NOT_CODE.search(rel):
                yield language, f"thealgorithms/{repository}", rel, path


def benchmarks(root):
    for collection in sorted(Path(root).iterdir()):
        for path in sorted(collection.rglob("*")):
            rel = path.relative_to(collection).as_posix()
            language = BENCHMARKS.get(ext_of(path))
            if language and path.is_file() and not rel.startswith(".") and not NOT_CODE.search(rel):
                yield language, f"benchmarks/{collection.name}", rel, path


def projects(root):
    for name, (_, language, folders, left_out) in sorted(PROJECTS.items()):
        base = Path(root, name)
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base).as_posix()
            if (path.is_file() and ext_of(path) in EXTENSIONS[language]
                    and any(rel.startswith(f) for f in folders)
                    and not any(rel.startswith(f) for f in left_out)):
                yield language, f"projects/{name}", rel, path


READERS = {"exercism": exercism, "linguist": linguist, "piston": piston,
           "rosetta": rosetta, "sample-programs": sample_programs,
           "thealgorithms": thealgorithms, "benchmarks": benchmarks,
           "projects": projects}


def normal(text):
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", default=os.environ.get("UNSANDBOX_DETECTION_SOURCES"))
    ap.add_argument("--out", default=os.environ.get("UNSANDBOX_DETECTION_OUT"))
    ap.add_argument("--cap", type=int, default=int(os.environ.get("UNSANDBOX_DETECTION_CAP", "150")))
    args = ap.parse_args()
    if not args.sources:
        sys.exit("name the sources folder with --sources or UNSANDBOX_DETECTION_SOURCES")
    root = Path(__file__).resolve().parents[2]
    out = Path(args.out or root / "target/detection-corpus/sources")
    picked = {"tune": [], "eval": [], "eval-algorithms": [], "eval-benchmarks": [], "dev": []}
    for source, reader in READERS.items():
        folder = Path(args.sources, source)
        if not folder.is_dir():
            print(f"sources: {source}: not present in {args.sources}, left out", file=sys.stderr)
            continue
        groups = {}
        # A reader yields a file's path, or the text itself (rosetta).
        for language, origin, rel, content in reader(folder):
            data = content.encode() if isinstance(content, str) else content.read_bytes()
            text = acceptable(data)
            if text is not None:
                groups.setdefault((language, origin), []).append((rel, text))
        for (language, origin), files in sorted(groups.items()):
            # Even steps across the sorted list, at most --cap of them.
            step = max(1.0, len(files) / args.cap)
            chosen = [files[int(i * step)] for i in range(min(len(files), args.cap))]
            picked[SETS[source]].extend((language, origin, rel, text) for rel, text in chosen)
    tuned = {normal(t) for _, _, _, t in picked["tune"]}
    dropped = {}
    for name in ("eval", "eval-algorithms", "eval-benchmarks", "dev"):
        before = len(picked[name])
        picked[name] = [p for p in picked[name] if normal(p[3]) not in tuned]
        dropped[name] = before - len(picked[name])
    for name, files in picked.items():
        d = out / name
        if d.exists():
            for p in sorted(d.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
        d.mkdir(parents=True, exist_ok=True)
        counts = {}
        with open(d / "index.tsv", "w") as index:
            index.write("file\tlanguage\tsource\tpath\n")
            for language, origin, rel, text in files:
                n = counts.get(language, 0) + 1
                counts[language] = n
                (d / language).mkdir(exist_ok=True)
                (d / language / str(n)).write_text(text)
                index.write(f"{language}/{n}\t{language}\t{origin}\t{rel}\n")
        summary = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        print(f"sources: {name}: {len(files)} files in {len(counts)} languages -> {d}", file=sys.stderr)
        print(f"  {summary}", file=sys.stderr)
    for name, n in dropped.items():
        print(f"sources: {name}: {n} files dropped as also in tune", file=sys.stderr)


if __name__ == "__main__":
    main()
