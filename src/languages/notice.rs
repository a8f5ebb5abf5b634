//! Copyright and licence notices: the comment at the top of a file that
//! says who owns it and on what terms. Its prose is the same in every
//! language (the Apache License header reads alike in Groovy, Erlang and
//! Objective-C), so a model that learns it learns which collections carry
//! which licence, not languages: Apache Groovy's own sources, read with
//! their headers, were taken for Objective-C, Erlang and TypeScript. The
//! model reads only the comment marks of these lines ([`notice_lines`]).
//! Pure.

/// Comments that run to the end of the line, by their first characters.
const LINE_COMMENTS: &[&str] = &["//", "#", ";", "--", "%", "!", "*", "dnl", "rem"];

/// Block comments (and Python's docstrings), opening and closing.
const BLOCKS: &[(&str, &str)] = &[
    ("/*", "*/"),
    ("(*", "*)"),
    ("{-", "-}"),
    ("#|", "|#"),
    ("--[[", "]]"),
    ("\"\"\"", "\"\"\""),
    ("'''", "'''"),
    ("=begin", "=end"),
    ("<!--", "-->"),
    ("%{", "%}"),
];

/// Words only a notice has.
const NOTICE_WORDS: &[&str] = &[
    "copyright",
    "licens",
    "licenc",
    "warrant",
    "all rights reserved",
    "spdx-",
];

/// Which of `lines` belong to a notice: the comments before a file's first
/// line of code (after a `#!` line and blank lines), taken a comment at a
/// time (a block comment, or a run of line comments), where the comment
/// names a copyright or a licence. A comment without such words (a
/// module's documentation) is code's company and is read as usual.
pub fn notice_lines(lines: &[&str]) -> Vec<bool> {
    let mut marks = vec![false; lines.len()];
    let mut i = usize::from(lines.first().is_some_and(|l| l.starts_with("#!")));
    loop {
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        let Some(line) = lines.get(i) else { break };
        let start = i;
        let text = line.trim_start();
        if let Some((open, close)) = BLOCKS.iter().find(|(o, _)| text.starts_with(o)) {
            if !text[open.len()..].contains(close) {
                i += 1;
                while i < lines.len() && !lines[i].contains(close) {
                    i += 1;
                }
            }
            i = (i + 1).min(lines.len());
        } else if line_comment(text) {
            while i < lines.len() && line_comment(lines[i].trim_start()) {
                i += 1;
            }
        } else {
            break;
        }
        let comment = lines[start..i].join("\n").to_lowercase();
        if NOTICE_WORDS.iter().any(|w| comment.contains(w)) {
            marks[start..i].fill(true);
        }
    }
    marks
}

/// A line comment's line: its mark, then anything but a word's letter
/// (`#include` and `remove()` are code, `# x` and `#---` are comments).
fn line_comment(text: &str) -> bool {
    LINE_COMMENTS.iter().any(|mark| {
        text.get(..mark.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(mark))
            && !text[mark.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(code: &str) -> Vec<bool> {
        notice_lines(&code.lines().collect::<Vec<_>>())
    }

    #[test]
    fn licence_headers_in_many_comment_styles() {
        let apache = "/*\n * Licensed to the Apache Software Foundation (ASF)\n * under one or more agreements.\n */\npackage groovy.util\n";
        assert_eq!(marks(apache), [true, true, true, true, false]);
        let hash = "#!/usr/bin/env python3\n# Copyright 2020 A. Author\n# SPDX-License-Identifier: MIT\n\nimport os\n";
        assert_eq!(marks(hash), [false, true, true, false, false]);
        let lisp = ";;;; Copyright (c) 2004 Someone\n;;;; See LICENSE\n(in-package :x)\n";
        assert_eq!(marks(lisp), [true, true, false]);
        let docstring = "\"\"\"Utilities.\n\nLicensed under the MIT licence.\n\"\"\"\nimport re\n";
        assert_eq!(marks(docstring), [true, true, true, true, false]);
        let ocaml = "(* Copyright INRIA *)\nlet x = 1\n";
        assert_eq!(marks(ocaml), [true, false]);
    }

    #[test]
    fn only_notices_before_the_code() {
        // documentation without a licence is read
        let doc = "// Sorting helpers.\n// See sort().\n\n/* Copyright me */\nfn main() {}\n// Copyright again\n";
        assert_eq!(marks(doc), [false, false, false, true, false, false]);
        // code first: nothing is a notice
        assert_eq!(
            marks("#include <stdio.h>\n/* Copyright x */\n"),
            [false, false]
        );
        assert_eq!(marks("remove(x) # licence\n"), [false]);
        // an unclosed block runs to the end
        assert_eq!(marks("/* Copyright\n x\n"), [true, true]);
        assert!(marks("").is_empty());
    }
}
