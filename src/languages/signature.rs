//! Syntax only one served language has, which names it before the model
//! reads the text: brainfuck's runs of `+-<>[]`, ALGOL 68's `OD`, `UPB`
//! and `[1:n]INT`, Modula-2's `MODULE X;` with `FROM Y IMPORT`, VHDL's
//! `entity X is` and `architecture A of X is`, zsh's `#compdef` line,
//! completion builtins and parameter flags (`${(f)x}`), and D's
//! `extern (C)`. All but D have no class in the model: one source, or a
//! handful of files, would teach it a collection's habits rather than the
//! language. D has one, but its bindings of C headers (declarations and
//! their documentation) read as other languages. Each signature was checked
//! on the tuning corpora, where every file it names holds code of its
//! language. Pure.

use std::sync::OnceLock;

use regex::Regex;

/// Syntax only `language` has.
#[derive(Debug)]
pub struct Signature {
    /// The served language it names.
    pub language: &'static str,
    /// Model classes the language's code also reads as: the signature
    /// counts only when the content's best answer is one of them (zsh's
    /// parameter flags tell zsh from bash, not from Groovy's `"${(char)c}"`).
    /// Empty: it counts whatever the content says.
    pub within: &'static [&'static str],
    test: Test,
}

#[derive(Debug, Clone, Copy)]
enum Test {
    /// Runs of brainfuck's commands (see [`brainfuck`]).
    Brainfuck,
    /// At least `needed` of the patterns match, each counted once.
    Several {
        patterns: &'static [&'static str],
        needed: usize,
    },
    /// The first pattern matches, and so does one of the others.
    AnchoredBy(&'static [&'static str]),
}

const SIGNATURES: &[Signature] = &[
    Signature {
        language: "brainfuck",
        within: &[],
        test: Test::Brainfuck,
    },
    // Upper-case stropping, as ALGOL 68 Genie and Rosetta Code write it.
    Signature {
        language: "algol68",
        within: &[],
        test: Test::Several {
            needed: 3,
            patterns: &[
                // loops end with OD, conditionals with FI, cases with ESAC
                r"(?m)(?:^|[;(\s])OD\b",
                r"(?:^|\s)(?:FI|ESAC)\b",
                r"\b(?:UPB|LWB)\b",
                // [1:n]INT a
                r"\[[^\]\n]*\]\s*(?:INT|REAL|CHAR|BOOL|STRING|COMPL|BITS)\b",
                r"\bPROC\b[^;\n]*=",
                r"\bREF\s+(?:\[|INT\b|REAL\b|CHAR\b|BOOL\b|STRING\b)",
                r"\bMODE\s+[A-Z][A-Z0-9]*\s*=",
                // names with spaces: INT number of items := 0
                r"\b(?:INT|REAL|BOOL|STRING|CHAR)\s+[a-z]\w*(?:\s+[a-z]\w*)+\s*:?=",
                r"\bprint\s*\(\s*\(",
                // formats: printf(($gl$, x))
                r"printf\s*\(\s*\(\s*\$",
                r"(?m)^\s*main\s*:\s*\(",
                r"\b(?:STRUCT|UNION|FLEX)\s*[(\[]",
                r"\bnew\s?line\b",
                r"\bstand\s+(?:out|in|error)\b",
                // +:=, %:=
                r"[-+*/%]:=",
                r"\b(?:ENTIER|REPR|ELIF)\b",
                // field selection: age OF person
                r"\b[a-z]\w*\s+OF\s+[a-z]",
            ],
        },
    },
    // D's linkage attribute: C++ writes `extern "C"`, and no other served
    // language has the form. The model reads D bindings of C headers,
    // mostly declarations and their documentation, as other languages.
    Signature {
        language: "d",
        within: &[],
        test: Test::Several {
            needed: 1,
            patterns: &[r"\bextern\s*\(\s*(?:C\+\+|C|D|Windows|System|Objective-C)\s*\)"],
        },
    },
    Signature {
        language: "modula-2",
        within: &[],
        test: Test::AnchoredBy(&[
            r"(?m)^\s*(?:(?:DEFINITION|IMPLEMENTATION)\s+)?MODULE\s+[A-Za-z]\w*\s*(?:\[\s*\d+\s*\])?\s*;",
            r"(?m)^\s*FROM\s+\w+\s+IMPORT\b",
            r"(?m)^\s*IMPORT\s+\w",
            r"(?m)^\s*END\s+[A-Za-z]\w*\s*\.",
        ]),
    },
    Signature {
        language: "vhdl",
        within: &[],
        test: Test::Several {
            needed: 1,
            patterns: &[
                r"(?im)^\s*entity\s+\w+\s+is\b",
                r"(?im)^\s*architecture\s+\w+\s+of\s+\w+\s+is\b",
                r"(?im)^\s*end\s+package\b",
                // use work.math_real.all; (Ada has no `.all` clause)
                r"(?im)^\s*use\s+\w+\.\w+\.all\s*;",
                // constant len : width := 4; (Ada: len : constant width)
                r"(?im)^\s*constant\s+\w+(?:\s*,\s*\w+)*\s*:\s*\w+(?:\s*\([^)\n]*\))?\s*(?::=[^;\n]*)?;",
            ],
        },
    },
    Signature {
        language: "vhdl",
        within: &[],
        test: Test::AnchoredBy(&[
            r"(?im)^\s*library\s+ieee\s*;",
            r"(?im)^\s*use\s+ieee\.\w+\.",
        ]),
    },
    Signature {
        language: "zsh",
        within: &[],
        test: Test::Several {
            needed: 1,
            patterns: &[
                // the first line completion functions start with; no
                // other shell reads it
                r"\A#(?:compdef|autoload)\b",
                // zsh's completion system and its own builtins, run as
                // commands
                r"(?m)^\s*(?:_arguments|_describe|_wanted|_values|_alternative|compadd|compdef|compctl|add-zsh-hook|zparseopts|emulate\s+-L\s+zsh|autoload\s+-Uz?)\b",
            ],
        },
    },
    Signature {
        language: "zsh",
        within: &["bash"],
        test: Test::Several {
            needed: 1,
            patterns: &[
                // parameter flags: ${(f)x}, ${(s.,.)x}, ${(@k)x}
                r"\$\{\([a-zA-Z@#%:=~^&*!.,0-9]+\)",
                r"(?m)^\s*(?:setopt|unsetopt|zstyle|zmodload|bindkey|zle\s+-N)\b",
                // (( $+commands[git] )), ${+functions[f]}: is it set
                r"\(\([^()\n]*\$\+\w",
                r"\$\{\+\w",
                // ${file:t}, ${0:A:h}: the path modifiers
                r"\$\{\w+:[tAhre](?::[tAhre])*\}",
            ],
        },
    },
];

fn compiled() -> &'static Vec<Vec<Regex>> {
    static RE: OnceLock<Vec<Vec<Regex>>> = OnceLock::new();
    RE.get_or_init(|| {
        SIGNATURES
            .iter()
            .map(|s| match s.test {
                Test::Brainfuck => vec![],
                Test::Several { patterns, .. } | Test::AnchoredBy(patterns) => patterns
                    .iter()
                    .map(|p| Regex::new(p).expect("signature patterns compile"))
                    .collect(),
            })
            .collect()
    })
}

/// The signatures `code` carries, in order. Only what the model reads is
/// read ([`super::tokens::head`]).
pub fn find(code: &str) -> Vec<&'static Signature> {
    let code = super::tokens::head(code);
    SIGNATURES
        .iter()
        .zip(compiled())
        .filter(|(s, res)| match s.test {
            Test::Brainfuck => brainfuck(code),
            Test::Several { needed, .. } => {
                res.iter().filter(|r| r.is_match(code)).count() >= needed
            }
            Test::AnchoredBy(_) => {
                res[0].is_match(code) && res[1..].iter().any(|r| r.is_match(code))
            }
        })
        .map(|(s, _)| s)
        .collect()
}

/// The served languages a signature can name.
pub fn languages() -> impl Iterator<Item = &'static str> {
    SIGNATURES.iter().map(|s| s.language)
}

/// Brainfuck: its brackets balance, and its commands come in runs (of 5
/// or more, of three commands or more among them a pointer move and an
/// increment or decrement) that add up to 20 characters and a twelfth of
/// the text at least (everything else in brainfuck is a comment). Other
/// languages' `i++`, `a[i]--` or `<-->` make no such runs, a rule of
/// `-----` has no pointer move, a comment's arrow (`------->`) only two
/// commands, and an interpreter that carries a brainfuck program in a
/// string carries far more code of its own. In the tuning corpora, the
/// brainfuck files' share was 0.116 to 0.90, and the most of any other
/// file 0.061 (a SNUSP interpreter written in Raku, with its program).
fn brainfuck(code: &str) -> bool {
    let is_command = |c: char| matches!(c, '+' | '-' | '<' | '>' | '[' | ']' | '.' | ',');
    if code.matches('[').count() != code.matches(']').count() {
        return false;
    }
    let in_runs: usize = code
        .split(|c: char| !is_command(c))
        .filter(|run| {
            let distinct = "+-<>[].,".chars().filter(|c| run.contains(*c)).count();
            run.len() >= 5 && distinct >= 3 && run.contains(['<', '>']) && run.contains(['+', '-'])
        })
        .map(str::len)
        .sum();
    let text = code.chars().filter(|c| !c.is_whitespace()).count();
    in_runs >= 20 && in_runs * 12 >= text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(code: &str) -> Vec<&'static str> {
        find(code).iter().map(|s| s.language).collect()
    }

    #[test]
    fn each_signature_names_its_language() {
        let hello_bf =
            "Hello\n++++++++[>++++[>++>+++>+++>+<<<<-]>+>+>->>+[<]<-]>>.>---.+++++++..+++.\n";
        assert_eq!(named(hello_bf), ["brainfuck"]);
        let a68 = "PROC gcd = (INT a, b) INT:\n  IF b = 0 THEN a ELSE gcd(b, a MOD b) FI;\n\
                   [1:3]INT xs := (1, 2, 3);\nFOR i FROM LWB xs TO UPB xs DO print((gcd(xs[i], 6), newline)) OD\n";
        assert_eq!(named(a68), ["algol68"]);
        let m2 = "MODULE Hello;\nFROM InOut IMPORT WriteString, WriteLn;\nBEGIN\n  WriteString(\"hi\"); WriteLn\nEND Hello.\n";
        assert_eq!(named(m2), ["modula-2"]);
        let vhdl = "library ieee;\nuse ieee.std_logic_1164.all;\n\nentity inverter is\n  port(a : in std_logic; b : out std_logic);\nend entity;\n\n\
                    architecture rtl of inverter is\nbegin\n  b <= not a;\nend architecture;\n";
        assert_eq!(named(vhdl), ["vhdl", "vhdl"]);
        assert_eq!(named("#compdef foo\n_arguments '-v[verbose]'\n"), ["zsh"]);
        assert_eq!(named("#autoload\nprint hi\n"), ["zsh"]);
        assert_eq!(named("local -a opts\nzparseopts -D -E v=opts\n"), ["zsh"]);
        assert_eq!(named("compctl -g '*.go' gofmt\n"), ["zsh"]);
        assert_eq!(named("add-zsh-hook precmd _title\n"), ["zsh"]);
        assert_eq!(
            named("extern (C) nothrow @nogc:\nint puts(const(char)* s);\n"),
            ["d"]
        );
        let zsh = find("lines=(${(f)\"$(cat x)\"})\necho $#lines\n");
        assert_eq!(zsh.len(), 1);
        assert_eq!((zsh[0].language, zsh[0].within), ("zsh", &["bash"][..]));
        for code in [
            "(( $+commands[git] )) || return\n",
            "if (( ${+functions[f]} )); then f; fi\n",
            "source ${0:A:h}/lib.zsh\necho ${file:t}\n",
        ] {
            let zsh = find(code);
            assert_eq!(zsh.len(), 1, "{code}");
            assert_eq!((zsh[0].language, zsh[0].within), ("zsh", &["bash"][..]));
        }
    }

    #[test]
    fn relatives_and_lookalikes_carry_none() {
        for code in [
            // C's decrements and comparisons, a rule of dashes
            "for (i = 0; i < n; i++) { a[i]--; b[i] = a[i] > 0 ? a[i] : -a[i]; }\n// ------------------------------\n",
            // an interpreter that mentions the commands
            "given $c {\n  when '>' { $p++ }\n  when '<' { $p-- }\n  when '+' { @m[$p]++ }\n}\n",
            // Fortran's THEN and a comment about a new line
            "      IF (B.NE.1) THEN\n        WRITE (6,*) 'new line'\n      END IF\n",
            // Pascal and Ada, the relatives of Modula-2 and VHDL
            "program Hello;\nuses crt;\nbegin\n  writeln('hi');\nend.\n",
            "with Ada.Text_IO;\npackage Shapes is\n   type Shape is tagged null record;\nend Shapes;\n",
            // bash
            "#!/bin/bash\nfor f in \"$@\"; do echo \"${f%.*}\"; done\n",
            "(( n = $# + 1 ))\necho \"${x:-a}\" \"${x:1}\" \"${x:$i:2}\" \"${#a[@]}\"\ncomplete -F _f f\n",
            // C++'s linkage
            "extern \"C\" {\nint puts(const char *s);\n}\n",
        ] {
            assert_eq!(named(code), Vec::<&str>::new(), "{code}");
        }
        // Unbalanced brackets are not brainfuck, however many commands.
        assert!(!brainfuck(&"+>+>-<<[".repeat(20)));
        // An interpreter with a program in a string is not brainfuck.
        let interpreter = format!(
            "{}char text[] = \"++++++++[>++++[>++>+++>+++>+<<<<-]>+>+>->>+[<]<-]>>.>---.+++++++..+++.\";\n",
            "static void run(const char *p) { int depth = 0; while (*p) { switch (*p++) { case '+': break; } } }\n".repeat(10)
        );
        assert!(!brainfuck(&interpreter));
        // Arrows in comments are not programs.
        assert!(!brainfuck(
            &"-- from -------> to <------- back\n".repeat(20)
        ));
    }
}
