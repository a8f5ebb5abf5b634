//! What a language's grammar does not allow where a close relative's does:
//! TypeScript's type annotations are not JavaScript, C++'s `::` and
//! `#include <vector>` are not C or Objective-C, Crystal's typed
//! parameters are not Ruby, D's `extern (C)` is not C++, C or Objective-C,
//! Vala's ownership and `throws` clauses are not C#, Java's and Groovy's
//! `new X()` and `void f()` are not Kotlin, Groovy's `def`, `[1, 2]` and
//! `{ x -> }` are not Java, C#'s and Vala's
//! `foreach (var x in xs)` and `using X;` are not D or C++,
//! CoffeeScript's `(x) ->` is not JavaScript, TypeScript or Python.
//! A text with such syntax is not in that
//! language, however many words it shares with it, and the detector drops
//! the language from the candidates. The word statistics of the model
//! cannot learn this: the relative is mostly the same words, and the class
//! learned from more code wins on them.
//!
//! Comments and string literals are blanked before the rules look, so
//! that prose and data never rule a language out. Each rule is syntax the
//! language's grammar rejects, not a habit of its programmers. Pure.

use std::sync::OnceLock;

use regex::Regex;

/// How a family of languages writes comments.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Comments {
    /// `// line` and `/* block */`.
    Slashes,
    /// `# line`.
    Hash,
}

/// Syntax that rules `languages` out: a relative's, not theirs.
struct Rule {
    languages: &'static [&'static str],
    comments: Comments,
    patterns: &'static [&'static str],
    /// A match that one of these also matches is no evidence (`case (1): {`
    /// is JavaScript, `operator!()` is C++).
    except: &'static [&'static str],
}

const RULES: &[Rule] = &[
    // TypeScript's syntax.
    Rule {
        languages: &["javascript"],
        comments: Comments::Slashes,
        patterns: &[
            // let x: number
            r"\b(?:let|const|var)\s+[A-Za-z_$][\w$]*\s*:\s*[\w$\[({]",
            // function f(a: number, b?: string)
            r"\bfunction\b[^(\n]*\((?:[^(){}\n]*,)?\s*(?:\.\.\.)?[\w$]+\??\s*:\s*[\w$\[({]",
            // function f(): number
            r"\bfunction\b[^(\n]*\([^()\n]*\)\s*:\s*[\w$\[({]",
            // function f<T>(
            r"\bfunction\s*[\w$]*\s*<[\w$, ]+>\s*\(",
            // (a: number) =>, (a: number): number =>
            r"\((?:[^(){}\n]*,)?\s*[\w$]+\??\s*:\s*[\w$\[\]<>|. ]+\)\s*(?::\s*[\w$\[\]<>|. ]+)?=>",
            // = (a, b): number => (not a conditional's `? (a) : b => b`)
            r"(?:[=(,]|\basync)\s*\([^(){}\n]*\)\s*:\s*[\w$.]+(?:<[^>\n]*>)?(?:\[\])*\s*=>",
            // method(): number {, the name written against its parenthesis
            r"(?m)^\s*(?:(?:public|private|protected|static|async|override|get|set)\s+)*[\w$]+(?:<[^>\n]*>)?\([^()\n]*\)\s*:\s*[\w$.]+(?:<[^>\n]*>)?(?:\[\])*(?:\s*\|\s*[\w$.]+(?:\[\])*)*\s*\{\s*$",
            // new Map<string, number>()
            r"\bnew\s+[\w$.]+<[\w$, \[\]<>|]+>\(\)",
            // method(a: number) in a class
            r"(?m)^\s*(?:(?:public|private|protected|static|async|override|readonly|get|set)\s+)*[\w$]+\s*(?:<[^>\n]*>)?\((?:[^(){}\n]*,)?\s*(?:(?:public|private|protected|readonly)\s+)*(?:\.\.\.)?[\w$]+\??\s*:\s*[\w$\[({]",
            // interface X {, enum X {, namespace X {
            r"(?m)^\s*(?:export\s+)?(?:declare\s+)?(?:interface|enum|namespace)\s+[A-Za-z_$][\w$.]*\s*(?:<[^>\n]*>)?\s*(?:extends\s[^{\n]*)?\{",
            // type X = ...
            r"(?m)^\s*(?:export\s+)?type\s+[A-Za-z_$][\w$]*\s*(?:<[^>\n]*>)?\s*=",
            // private x, public constructor(
            r"(?m)^\s*(?:static\s+)?(?:public|private|protected|readonly)\s+(?:static\s+|readonly\s+|async\s+)*[\w$]+\s*[(:=;?!<]",
            // abstract class, class X implements Y
            r"(?m)^\s*(?:export\s+)?(?:default\s+)?abstract\s+class\b",
            r"\bclass\s+[\w$]+(?:\s*<[^>\n]*>)?(?:\s+extends\s+[\w$.]+(?:<[^>\n]*>)?)?\s+implements\s+[\w$]",
        ],
        except: &[r"^\s*case\b"],
    },
    // C++'s syntax.
    Rule {
        languages: &["c", "objective-c"],
        comments: Comments::Slashes,
        patterns: &[
            // std::cout, Foo::bar (not an attribute's [[gnu::x]])
            r"(?:^|[^\[:\w])[A-Za-z_]\w*::[~A-Za-z_]",
            // #include <vector>: every C header ends in .h
            r"(?m)^\s*#\s*include\s*<[\w/]+>",
            r"(?m)^\s*(?:template\s*<|namespace\s+\w*\s*\{|using\s+namespace\s)",
            r"(?m)^\s*(?:public|private|protected)\s*:",
            r"(?m)^\s*class\s+[A-Za-z_]\w*\s*(?:final\s*)?(?:[:{]|$)",
            r"\b(?:static_cast|dynamic_cast|reinterpret_cast|const_cast)\s*<",
            r"\}\s*catch\s*\(",
        ],
        except: &[],
    },
    // Crystal's syntax.
    Rule {
        languages: &["ruby"],
        comments: Comments::Hash,
        patterns: &[
            // def f(x : Int32)
            r"(?m)^\s*(?:private\s+|protected\s+)?def\s+[\w.?!=\[\]]+\s*\((?:[^()\n]*,)?\s*[@*&]*\w+\s+:\s+[A-Z(]",
            // def f(x) : Bool
            r"(?m)^\s*(?:private\s+|protected\s+)?def\s+[\w.?!=\[\]]+\s*(?:\([^()\n]*\))?\s+:\s+[A-Z]",
            // [] of Int32, {} of String => Int32
            r"(?:\[\]|\{\})\s+of\s+[A-Z]",
            // property x : Int32
            r"(?m)^\s*(?:property|getter|setter|class_property|class_getter)[?!]?\s+@?\w+\s+:\s+[A-Z]",
            // @x : Int32 = 0
            r"(?m)^\s*@?\w+\s+:\s+[A-Z][\w:]*(?:\([^)\n]*\))?\??\s*(?:=[^=~>]|$)",
            // lib LibC, struct Point
            r"(?m)^\s*(?:lib|struct|annotation)\s+[A-Z]\w*\s*$",
            r"\buninitialized\s+[A-Z]",
            // alias Name = Type; class Box(T); def f(x : T) forall T
            r"(?m)^\s*alias\s+[A-Z]\w*\s*=",
            r"(?m)^\s*(?:abstract\s+)?(?:class|struct|module)\s+[A-Z][\w:]*\(",
            r"\bforall\s+[A-Z]\b",
            // ->(x : Int32) { }, |x : Int32|, @[Link("m")]
            r"->\s*\((?:[^()\n]*,)?\s*\w+\s+:\s+[A-Z]",
            r"\|\s*\w+\s+:\s+[A-Z]\w*(?:\([^)\n]*\))?\s*[|,]",
            r"(?m)^\s*@\[[A-Z]",
            // Array(Int32).new, Int64::MAX, x.as(Float64): Crystal's number
            // types, which Ruby does not name
            r"\b(?:U?Int(?:8|16|32|64|128)|Float(?:32|64))\b",
            // 10_i64, 255u8, n.to_i64, gets.not_nil!, typeof(x)
            r"\b\d[\d_]*_?[iu](?:8|16|32|64|128)\b",
            r"\.to_[iuf](?:8|16|32|64|128)\b",
            r"\.not_nil!",
            r"\btypeof\(",
            // xs.map &.to_s, xs.sum(&.size): Ruby's safe navigation is x&.y
            r"(?:\(|\s)&\.[a-z_]",
        ],
        except: &[],
    },
    // Vala's syntax: ownership, error domains, signals, construct blocks
    // and property defaults are in no relative's grammar.
    Rule {
        languages: &["csharp", "d", "java", "kotlin", "cpp", "c", "objective-c"],
        comments: Comments::Slashes,
        patterns: &[
            // unowned string s = ...; (owned Foo) x; weak Node? parent;
            r"\b(?:unowned|owned|weak)\s+[A-Za-z_][\w.]*(?:<[^>\n]*>)?(?:\[\])?\??\s+[A-Za-z_]\w*\s*[=;,)]",
            r"\(\s*(?:unowned|owned)\s*\)\s*[A-Za-z_]",
            // errordomain IOError {, signal void changed ();, construct {
            r"(?m)^\s*(?:public\s+|internal\s+|private\s+)?errordomain\s+[A-Za-z_]\w*\s*\{?\s*$",
            r"(?m)^\s*(?:public\s+|private\s+|protected\s+|internal\s+)?(?:virtual\s+)?signal\s+[\w.<>?\[\]]+\s+\w+\s*\(",
            r"(?m)^\s*(?:static\s+|class\s+)?construct\s*\{",
            // public int x { get; set; default = 5; }
            r"[{;]\s*default\s*=[^=]",
        ],
        except: &[r"^\w+\s+(?:as|is)\b"],
    },
    // Vala's `throws` and `yield f ()`, which Java has too (its
    // switch expressions `yield` a value).
    Rule {
        languages: &["csharp"],
        comments: Comments::Slashes,
        patterns: &[
            // void f () throws IOError {: C# declares no exceptions
            r"\)\s*throws\s+[A-Z][\w.]*(?:\s*,\s*[A-Z][\w.]*)*\s*[{;]",
            // yield obj.read_async (): C#'s yield is `yield return` or `yield break`
            r"\byield\s+[A-Za-z_][\w.]*\s*\(",
        ],
        except: &[r"^yield\s+(?:return|break)\b"],
    },
    // Java's and Groovy's syntax: Kotlin has no `new`, `void`, `def`,
    // `instanceof`, C's `for (;;)` or `import static`.
    Rule {
        languages: &["kotlin"],
        comments: Comments::Slashes,
        patterns: &[
            r"\bnew\s+[A-Za-z_][\w.]*\s*[(<\[]",
            r"(?m)^\s*(?:(?:public|private|protected|static|final|synchronized|abstract)\s+)*void\s+\w+\s*\(",
            r"\bfor\s*\([^;\n]*;[^;\n]*;",
            r"\binstanceof\b",
            r"(?m)^\s*def\s+\w",
            r"(?m)^\s*import\s+static\s",
        ],
        except: &[],
    },
    // Groovy's syntax: Java has no `def`, list literals, closures with
    // parameters or calls without parentheses.
    Rule {
        languages: &["java"],
        comments: Comments::Slashes,
        patterns: &[
            r"(?m)^\s*def\s+\w",
            r"=\s*\[",
            r"\.each\s*\{",
            r"\{\s*\w+(?:\s*,\s*\w+)*\s*->",
            r"(?m)^\s*println\s+[\w'\x22]",
        ],
        // Java's `switch (k) { default -> 0; }`
        except: &[r"^\{\s*default\b"],
    },
    // C#'s and Vala's syntax: D's foreach is `foreach (x; xs)`, Java and
    // Kotlin have none, and none of them has `using X;` (C++ writes
    // `using std::x;`), properties with `{ get; set; }` or `delegate T f(`.
    Rule {
        languages: &["d", "cpp", "c", "objective-c", "java", "kotlin"],
        comments: Comments::Slashes,
        patterns: &[
            r"\bforeach\s*\(\s*[A-Za-z_][^;()\n]*\s\w+\s+in\s",
            r"(?m)^\s*using\s+[A-Za-z_]\w*(?:\.\w+)*\s*;",
            r"\{\s*(?:(?:public|private|protected|internal|owned)\s+)*get\s*[;{]",
            r"(?m)^\s*(?:public\s+|private\s+|internal\s+)?delegate\s+[\w.<>\[\]?]+\s+\w+\s*\(",
        ],
        except: &[],
    },
    // C#'s and Vala's `namespace X {`, which C++ has too.
    Rule {
        languages: &["d", "java", "kotlin"],
        comments: Comments::Slashes,
        patterns: &[r"(?m)^\s*namespace\s+[A-Za-z_][\w.]*\s*\{"],
        except: &[],
    },
    // CoffeeScript's syntax: functions are `(x) ->`, loops and conditions
    // need no parentheses.
    Rule {
        languages: &["javascript", "typescript"],
        comments: Comments::Slashes,
        patterns: &[
            r"\)\s*->",
            r"(?m)(?:[=:(,]|^)\s*->",
            r"(?m)^\s*for\s+[\w$@,\s]+\s+(?:in|of)\s",
            r"(?m)^\s*(?:unless|until)\s+[\w@$(!]",
        ],
        except: &[],
    },
    // CoffeeScript's syntax that Python's grammar rejects: arrows outside
    // a `def`'s return annotation, `unless` and `until`.
    Rule {
        languages: &["python"],
        comments: Comments::Hash,
        patterns: &[
            r"(?m)(?:[=:(,]|^)\s*(?:\([^()\n]*\)\s*)?[-=]>",
            r"(?m)^\s*(?:unless|until)\s+[\w@$(!]",
        ],
        except: &[],
    },
    // D's syntax.
    Rule {
        languages: &["cpp", "c", "objective-c"],
        comments: Comments::Slashes,
        patterns: &[
            r"\bextern\s*\(\s*(?:C\+\+|C|D|Windows|System|Objective-C)\s*\)",
            r"(?m)^\s*(?:(?:public|private|static)\s+)*import\s+(?:std|core|etc)\.\w",
            r"(?m)^\s*module\s+[A-Za-z_][\w.]*\s*;",
            // to!string, map!(a => a * 2)
            r"\b[A-Za-z_]\w*!\(",
            r"(?m)^\s*unittest\s*\{?\s*$",
        ],
        except: &[r"^operator!"],
    },
];

/// A rule's patterns and exceptions, compiled.
struct Compiled {
    patterns: Vec<Regex>,
    except: Vec<Regex>,
}

fn compiled() -> &'static Vec<Compiled> {
    static RE: OnceLock<Vec<Compiled>> = OnceLock::new();
    let all = |list: &[&str]| -> Vec<Regex> {
        list.iter()
            .map(|p| Regex::new(p).expect("grammar patterns compile"))
            .collect()
    };
    RE.get_or_init(|| {
        RULES
            .iter()
            .map(|r| Compiled {
                patterns: all(r.patterns),
                except: all(r.except),
            })
            .collect()
    })
}

/// The languages `code` cannot be in, by the syntax it has. Only what the
/// model reads is read ([`super::tokens::head`]).
pub fn ruled_out(code: &str) -> Vec<&'static str> {
    let code = super::tokens::head(code);
    let mut blanked: [Option<String>; 2] = [None, None];
    RULES
        .iter()
        .zip(compiled())
        .filter(|(rule, c)| {
            let slot = &mut blanked[rule.comments as usize];
            let text = slot.get_or_insert_with(|| blank(code, rule.comments));
            c.patterns.iter().any(|p| {
                p.find_iter(text)
                    .any(|m| !c.except.iter().any(|e| e.is_match(m.as_str())))
            })
        })
        .flat_map(|(rule, _)| rule.languages.iter().copied())
        .fold(Vec::new(), |mut out, l| {
            if !out.contains(&l) {
                out.push(l);
            }
            out
        })
}

/// Whether the two characters after a quote `c` are `c` too.
fn triple(chars: &std::iter::Peekable<std::str::Chars<'_>>, c: char) -> bool {
    let mut ahead = chars.clone();
    ahead.next() == Some(c) && ahead.next() == Some(c)
}

/// `code` with its comments removed and its string literals emptied
/// (`"a: b"` becomes `""`); line breaks are kept.
fn blank(code: &str, comments: Comments) -> String {
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if comments == Comments::Slashes && chars.peek() == Some(&'/') => {
                skip_line(&mut chars, &mut out)
            }
            '#' if comments == Comments::Hash => skip_line(&mut chars, &mut out),
            '/' if comments == Comments::Slashes && chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
                out.push(' ');
            }
            // Python's and CoffeeScript's """docstrings""" span lines.
            '"' | '\'' if comments == Comments::Hash && triple(&chars, c) => {
                chars.next();
                chars.next();
                out.push_str(&c.to_string().repeat(3));
                let mut run = 0;
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                    }
                    run = if d == c { run + 1 } else { 0 };
                    if run == 3 {
                        out.push_str(&c.to_string().repeat(3));
                        break;
                    }
                }
            }
            '"' | '\'' | '`' => {
                out.push(c);
                let mut escaped = false;
                while let Some(&d) = chars.peek() {
                    // Only a template literal spans lines.
                    if d == '\n' && c != '`' {
                        break;
                    }
                    chars.next();
                    if d == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        out.push(c);
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    while chars.peek().is_some_and(|d| *d != '\n') {
        chars.next();
    }
    out.push(' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typescript_syntax_is_not_javascript() {
        for ts in [
            "let n: number = 4;",
            "function add(a: number, b: number) { return a + b }",
            "function f(): void {}",
            "function id<T>(x) { return x }",
            "const f = (s: string) => s.length;",
            "class A {\n  constructor(private x: number) {}\n  get(i?: number) {}\n}",
            "export interface Point {\n  x: number\n}",
            "type Id = string | number;",
            "class B {\n  private count = 0;\n}",
            "abstract class Shape {}",
            "const sq = (x: number): number => x * x;",
            "export const sum = (a, b): number => a + b;",
            "class S {\n  size(): number {\n    return 0;\n  }\n}",
            "const seen = new Map<string, number>();",
            "class Sq extends Shape implements Area {}",
        ] {
            assert!(ruled_out(ts).contains(&"javascript"), "{ts}");
        }
    }

    #[test]
    fn javascript_is_never_ruled_out_by_its_own_syntax() {
        for js in [
            "const x = cond ? a : b;",
            "const {a: b, c} = obj;",
            "function f(x, {a: b}) { return x ? f(a) : b }",
            "function g(a = y ? 1 : 2) {}",
            "console.log(x ? 'a: b' : \"c: d\");",
            "var o = { type: string, f: function() { return 1 } };",
            "switch (x) {\n  case 1: break;\n  default: y();\n}",
            "loop: for (;;) { break loop; }",
            "// let x: number\n/* function f(a: number) */\nlet s = `type X = 1`;",
            "import { a as b } from './m.js';\nexport default class Foo extends Bar {}",
            "class C {\n  static x = 1;\n  #p = 2;\n  m(a, b) { return a ? b : c }\n}",
            "if (a? b : c) {}\nwhile (x ?y: z) {}",
            "const re = /a: b/;",
            "const f = ok ? (a) : b => b;\nswitch (v) {\n  case (1): {\n    break;\n  }\n  case(2): {\n  }\n}",
            "const m = new Map();\nconst x = new Foo < a, b > (c);",
            "const g = cond ? (\n  1\n) : null;",
        ] {
            assert!(
                !ruled_out(js).contains(&"javascript"),
                "{js}: {:?}",
                ruled_out(js)
            );
        }
    }

    #[test]
    fn cpp_syntax_is_not_c_and_c_is_not_ruled_out() {
        for cpp in [
            "#include <iostream>\nint main() { std::cout << 1; }",
            "#include <vector>",
            "template <typename T> T id(T x) { return x; }",
            "namespace util {\n}",
            "class Point {\npublic:\n  int x;\n};",
            "int v = static_cast<int>(d);",
            "try { f(); } catch (...) {}",
        ] {
            assert!(ruled_out(cpp).contains(&"c"), "{cpp}");
        }
        for c in [
            "#include <stdio.h>\n#include <sys/types.h>\nint main(void) { printf(\"a::b\\n\"); }",
            "[[gnu::always_inline]] static inline int f(void) { return 0; }",
            "struct class_s { int public; };\nlabel: x = a ? b : c;",
            "// std::vector<int> v;\n/* #include <vector> */",
        ] {
            assert!(!ruled_out(c).contains(&"c"), "{c}: {:?}", ruled_out(c));
        }
    }

    #[test]
    fn crystal_syntax_is_not_ruby_and_ruby_is_not_ruled_out() {
        for cr in [
            "def add(a : Int32, b : Int32)\n  a + b\nend",
            "def empty? : Bool\n  true\nend",
            "xs = [] of Int32",
            "class P\n  property name : String\nend",
            "@count : Int32 = 0",
            "struct Point\nend",
            "buf = uninitialized UInt8[4]",
            "alias Matrix = Array(Array(Float64))",
            "class Box(T)\n  def initialize(@v : T); end\nend",
            "def first(xs : Array(T)) forall T\nend",
            "sq = ->(x : Int32) { x * x }",
            "xs.each { |x : Int32| p x }",
            "@[Link(\"m\")]\nlib LibM\nend",
            "grid = Array(Float64).new(3, 0.0)\nbest = Int32::MAX",
            "x = 10_i64 + 255u8",
            "n = gets.not_nil!.to_i64",
            "puts typeof(n)",
            "puts xs.map &.to_s\nputs xs.sum(&.size)",
        ] {
            assert!(ruled_out(cr).contains(&"ruby"), "{cr}");
        }
        for rb in [
            "def f(a, b = c ? d : E)\nend",
            "def g(x:, y: 2) = x ? y : Z",
            "x = cond ? a : B\nputs \"a : B\"",
            "# def f(x : Int32)\nh = { a: 1, 'b' => 2 }",
            "add = ->(a, b) { a + b }\nattr_accessor :name",
            "Point = Struct.new(:x, :y)",
            "alias old_name new_name\nalias_method :a, :b\nclass Foo < Bar; end",
            "xs.each { |x| p x ? 1 : Y }\nsq = ->(x) { x }\n@list = [x]",
            "name = user&.name\nxs.map(&:to_s)\nn = s.to_i + s.to_f",
            "FFI::Type::INT32\nx = 1_000_000\nenc = 'utf8'",
        ] {
            assert!(
                !ruled_out(rb).contains(&"ruby"),
                "{rb}: {:?}",
                ruled_out(rb)
            );
        }
    }

    #[test]
    fn vala_syntax_is_not_csharp_and_csharp_is_not_ruled_out() {
        for vala in [
            "public void load (string path) throws FileError, IOError {\n}",
            "unowned string name = get_name ();",
            "weak Node? parent;\nforeach (unowned Item i in items) {}",
            "var s = (owned) buffer;",
            "public errordomain ParseError {\n  FAILED\n}",
            "public signal void changed (int n);",
            "class Foo : Object {\n  construct {\n    x = 1;\n  }\n}",
            "public int size { get; set; default = 5; }",
            "var data = yield stream.read_bytes_async (4096);",
        ] {
            assert!(ruled_out(vala).contains(&"csharp"), "{vala}");
        }
        for vala in [
            "unowned string name = get_name ();",
            "public errordomain ParseError {\n  FAILED\n}",
            "public int size { get; set; default = 5; }",
            "namespace Demo {\n  public delegate int Op (int a);\n}",
        ] {
            let out = ruled_out(vala);
            assert!(
                out.contains(&"d") && out.contains(&"java"),
                "{vala}: {out:?}"
            );
        }
        // Java's own throws and switch-expression yield
        let java = "int f(int k) throws IOException {\n  return switch (k) { default -> { yield compute(k); } };\n}";
        assert!(!ruled_out(java).contains(&"java"), "{:?}", ruled_out(java));
        for cs in [
            "public void Load(string path) {\n  throw new IOException(\"x\");\n}",
            "bool owned = true;\nvar x = owned as object;\nif (weak is null) {}",
            "yield return Next(x);\nyield break;",
            "switch (x) { default: break; }\nT v = default;",
            "// unowned string s = x;\nvar e = new Signal();",
            "event EventHandler Changed;\npublic Foo() : base() {}",
        ] {
            assert!(
                !ruled_out(cs).contains(&"csharp"),
                "{cs}: {:?}",
                ruled_out(cs)
            );
        }
    }

    /// Each text of `with` rules out every one of `languages`; no text of
    /// `without` rules out any of them.
    fn rules_out(languages: &[&str], with: &[&str], without: &[&str]) {
        for code in with {
            let out = ruled_out(code);
            assert!(languages.iter().all(|l| out.contains(l)), "{code}: {out:?}");
        }
        for code in without {
            let out = ruled_out(code);
            assert!(
                !languages.iter().any(|l| out.contains(l)),
                "{code}: {out:?}"
            );
        }
    }

    #[test]
    fn java_and_groovy_syntax_is_not_kotlin() {
        rules_out(
            &["kotlin"],
            &[
                "def list = new ArrayList<String>()\nassert list.isEmpty()",
                "void testSum() {\n  assert 1 + 1 == 2\n}",
                "for (int i = 0; i < n; i++) { println i }",
                "if (x instanceof String) println x",
                "import static org.junit.Assert.*",
            ],
            &[
                "fun main() {\n  val xs = listOf(1, 2)\n  for (x in xs) println(x)\n}",
                "val new = 1 // new Foo()\nclass A : B() { override fun f(): Unit {} }",
                "if (x is String) println(\"void f(\")\nimport kotlin.math.*",
            ],
        );
    }

    #[test]
    fn coffeescript_syntax_is_not_python() {
        rules_out(
            &["python"],
            &[
                "square = (x) -> x * x",
                "obj =\n  run: => @x",
                "until done\n  step()",
            ],
            &[
                "def f(x: int) -> int:\n    return x\n",
                "def g():\n    \"\"\"Run\n    until done, as a -> b.\n    \"\"\"\n    x = \"\"\"\n-> y\n\"\"\"\n",
                "# f :: (a -> b) -> [a]\nprint(\"x = -> y\")\n",
            ],
        );
    }

    #[test]
    fn groovy_syntax_is_not_java() {
        rules_out(
            &["java"],
            &[
                "def x = 1",
                "List xs = [1, 2, 3]",
                "xs.each { println it }",
                "xs.collect { a, b -> a + b }",
                "println \"hi\"",
            ],
            &[
                "int[] a = new int[]{1, 2};\nx = a[0];\nSystem.out.println(\"= [\");",
                "xs.forEach(x -> System.out.println(x));\nRunnable r = () -> { run(); };",
                "// def x = [1]\nif (a == b) { c(); }",
            ],
        );
    }

    #[test]
    fn csharp_and_vala_syntax_is_not_d_or_cpp() {
        rules_out(
            &["d", "cpp"],
            &[
                "foreach (var x in xs) { Console.WriteLine(x); }",
                "foreach (unowned string s in names) print (s);",
                "using System;\nusing System.Collections.Generic;",
                "using GLib;\nvoid main () {}",
            ],
            &[
                "foreach (x; xs) writeln(x);\nforeach (i, ref x; arr) {}",
                "using namespace std;\nusing std::cout;\nusing T = int;",
                "#define foreach(x, xs) for (auto x : xs)\nforeach (x, list) f(x);",
            ],
        );
    }

    #[test]
    fn coffeescript_syntax_is_not_javascript() {
        rules_out(
            &["javascript", "typescript"],
            &[
                "square = (x) -> x * x",
                "hello = ->\n  console.log 'hi'",
                "obj =\n  run: -> 1",
                "for item in list\n  console.log item",
                "unless done\n  go()",
            ],
            &[
                "while (i-->0) { f(i); }\nconst g = (a) => a + 1;",
                "// map :: (a -> b) -> [a] -> [b]\nconst s = 'x -> y';",
                "for (const x of xs) { until(x); }\nfor await (const y of ys) {}",
            ],
        );
    }

    #[test]
    fn d_syntax_is_not_cpp() {
        for d in [
            "module app.main;\nimport std.stdio;",
            "extern (C) int puts(const char*);",
            "auto s = to!string(4);\nauto m = map!(a => a * 2)(xs);",
            "unittest\n{\n  assert(1);\n}",
        ] {
            assert!(
                ruled_out(d).contains(&"cpp") && ruled_out(d).contains(&"c"),
                "{d}"
            );
        }
        for cpp in [
            "extern \"C\" int puts(const char*);\nif (!(a != b)) {}",
            "import std;\nint main() { return !(x); }",
            "bool operator!() const { return !ok; }",
        ] {
            assert!(
                !ruled_out(cpp).contains(&"cpp"),
                "{cpp}: {:?}",
                ruled_out(cpp)
            );
        }
    }

    #[test]
    fn blanking_keeps_lines_and_empties_strings() {
        assert_eq!(
            blank("a = \"x: y\" // c\n/* b\n */ 'q'", Comments::Slashes),
            "a = \"\"  \n\n  ''"
        );
        assert_eq!(blank("x # c\ny", Comments::Hash), "x  \ny");
        assert_eq!(
            blank("a = \"\"\"x\n# y\n\"\"\" + ''\nb", Comments::Hash),
            "a = \"\"\"\n\n\"\"\" + ''\nb"
        );
    }
}
