//! Field path → line number, so that an error found after deserialising
//! (`routes[2].upstream: unknown upstream "flow"`) can still name its line.
//!
//! serde_yaml reports a position only for errors it raises itself, and exposes neither
//! positions of values nor its event stream. So the text is parsed a second time with
//! `yaml-rust2`, whose event API carries a marker per event, into a tree that keeps
//! only structure and lines. The tree is small (one entry per YAML node) and is kept in
//! the `Config` for the life of the process, so that later wiring (route conflicts, TLS
//! files) can report with a line too.
//!
//! The locator never decides whether a config is valid: if yaml-rust2 and libyaml ever
//! disagree on a document, lookups fall back to the nearest known line and, at worst,
//! to line 1.

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Lines of every mapping key and sequence item of one YAML document.
#[derive(Default)]
pub struct Locator {
    root: Option<Node>,
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Locator { .. }")
    }
}

enum Node {
    Leaf {
        line: usize,
    },
    Seq {
        line: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        entries: Vec<(String, usize, Node)>,
    },
}

impl Node {
    /// Where the node starts as a reader sees it. yaml-rust2 marks a block mapping at
    /// the end of its first key, so a mapping's first key is the better answer.
    fn line(&self) -> usize {
        match self {
            Node::Leaf { line } => *line,
            Node::Seq { line, items } => items.first().map_or(*line, |i| i.line().min(*line)),
            Node::Map { line, entries } => entries.first().map_or(*line, |(_, l, _)| *l),
        }
    }
}

impl Locator {
    /// Parses `text`; a document yaml-rust2 cannot read gives a locator that knows
    /// only what it read before the problem (serde_yaml reports the problem itself).
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // A syntax error is serde_yaml's to report, with its own position; keep the
        // part of the tree built so far.
        let _ = parser.load(&mut builder, false);
        Locator {
            root: builder
                .root
                .or_else(|| builder.stack.into_iter().next().map(Frame::close)),
        }
    }

    /// The line of `field` (`routes[2].upstream`, `listen.tls.cert`): the line of its
    /// key, or of the item for an index. A field that is not in the file (a missing
    /// required field, a default) gets the line of its nearest written parent.
    pub fn line_of(&self, field: &str) -> usize {
        self.walk(field).0
    }

    /// The line of `field` if the document has it (no fallback to a parent).
    pub(super) fn find(&self, field: &str) -> Option<usize> {
        match self.walk(field) {
            (line, Some(_)) => Some(line),
            (_, None) => None,
        }
    }

    /// The line where `key` appears a second time in the mapping at `parent`: serde
    /// reports a duplicate at the mapping, the reader wants the repeat.
    /// Returns (first line, repeat line).
    pub(super) fn repeated_key_lines(&self, parent: &str, key: &str) -> Option<(usize, usize)> {
        let (_, Some(Node::Map { entries, .. })) = self.walk(parent) else {
            return None;
        };
        let mut lines = entries
            .iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, line, _)| *line);
        Some((lines.next()?, lines.next()?))
    }

    /// Follows `field` as far as the document goes: the line reached, and the node
    /// if the whole path was found.
    fn walk(&self, field: &str) -> (usize, Option<&Node>) {
        let Some(mut node) = self.root.as_ref() else {
            return (1, None);
        };
        let mut line = node.line();
        let mut rest = field;
        loop {
            if rest.is_empty() {
                return (line, Some(node));
            }
            if let Some(after) = rest.strip_prefix('[') {
                let Some((index, after)) = after.split_once(']') else {
                    return (line, None);
                };
                let (Ok(index), Node::Seq { items, .. }) = (index.parse::<usize>(), node) else {
                    return (line, None);
                };
                let Some(item) = items.get(index) else {
                    return (line, None);
                };
                node = item;
                line = item.line();
                rest = after;
                continue;
            }
            let path = rest.strip_prefix('.').unwrap_or(rest);
            let Node::Map { entries, .. } = node else {
                return (line, None);
            };
            // Keys may themselves contain `.` (an upstream named `feeds.v2`): take the
            // longest key that is followed by a separator or the end.
            let found = entries
                .iter()
                .filter(|(key, _, _)| {
                    path.strip_prefix(key.as_str())
                        .is_some_and(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['))
                })
                .max_by_key(|(key, _, _)| key.len());
            let Some((key, key_line, value)) = found else {
                return (line, None);
            };
            node = value;
            line = *key_line;
            rest = &path[key.len()..];
        }
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// What [`Locator::visit_maps`] calls: the path to a mapping, and its keys with lines.
pub(super) type MapVisitor<'a> = dyn FnMut(&[Step], &[(String, usize)]) + 'a;

impl Locator {
    /// Calls `f` once per mapping of the document, with the path to it and its keys
    /// (with their lines) in file order.
    pub(super) fn visit_maps(&self, f: &mut MapVisitor<'_>) {
        fn visit(node: &Node, path: &mut Vec<Step>, f: &mut MapVisitor<'_>) {
            match node {
                Node::Leaf { .. } => {}
                Node::Seq { items, .. } => {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Step::Index(i));
                        visit(item, path, f);
                        path.pop();
                    }
                }
                Node::Map { entries, .. } => {
                    let keys: Vec<(String, usize)> =
                        entries.iter().map(|(k, l, _)| (k.clone(), *l)).collect();
                    f(path, &keys);
                    for (key, _, value) in entries {
                        path.push(Step::Key(key.clone()));
                        visit(value, path, f);
                        path.pop();
                    }
                }
            }
        }
        if let Some(root) = &self.root {
            visit(root, &mut Vec::new(), f);
        }
    }
}

enum Frame {
    Seq {
        line: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        entries: Vec<(String, usize, Node)>,
        /// The key read, waiting for its value.
        key: Option<(String, usize)>,
    },
}

impl Frame {
    fn close(self) -> Node {
        match self {
            Frame::Seq { line, items } => Node::Seq { line, items },
            Frame::Map { line, entries, .. } => Node::Map { line, entries },
        }
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Only the first document counts, as for serde_yaml.
    done: bool,
}

impl Builder {
    /// Attaches a finished node (or a key scalar) to the open container.
    fn finish(&mut self, node: Node, text: Option<String>) {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                self.done = true;
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some((k, line)) => entries.push((k, line, node)),
                // A key that is not a scalar cannot be named in a field path;
                // it still takes its place so that its value is not read as a key.
                None => *key = Some((text.unwrap_or_default(), node.line())),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(text, ..) => self.finish(Node::Leaf { line }, Some(text)),
            Event::Alias(_) => self.finish(Node::Leaf { line }, None),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq {
                line,
                items: Vec::new(),
            }),
            Event::MappingStart(..) => self.stack.push(Frame::Map {
                line,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    self.finish(frame.close(), None);
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Locator;

    const DOC: &str = "\
# comment
listen:
  address: 0.0.0.0:8443
  tls:
    cert: a.pem
    key: b.pem
upstreams:
  feeds.v2: { url: \"http://a\" }
  feeds: { url: \"http://b\" }
routes:
  - { name: a, methods: [GET] }
  -
    name: b
    methods:
      - GET
      - POST
";

    #[test]
    fn keys_items_and_fallbacks() {
        let l = Locator::new(DOC);
        assert_eq!(l.line_of("listen"), 2);
        assert_eq!(l.line_of("listen.address"), 3);
        assert_eq!(l.line_of("listen.tls"), 4);
        assert_eq!(l.line_of("listen.tls.key"), 6);
        assert_eq!(l.line_of("listen.proxy_protocol"), 2);
        assert_eq!(l.line_of("upstreams.feeds.v2.url"), 8);
        assert_eq!(l.line_of("upstreams.feeds.url"), 9);
        assert_eq!(l.line_of("routes[0]"), 11);
        assert_eq!(l.line_of("routes[0].methods[0]"), 11);
        assert_eq!(l.line_of("routes[1]"), 13);
        assert_eq!(l.line_of("routes[1].methods[1]"), 16);
        assert_eq!(l.line_of("routes[7].path"), 10);
        assert_eq!(l.line_of("cache.ttl"), 2);
        assert_eq!(l.line_of(""), 2);
    }

    #[test]
    fn empty_and_broken_documents() {
        assert_eq!(Locator::new("").line_of("listen.tls"), 1);
        let broken = Locator::new("a:\n  b: 1\nc: [\n");
        assert_eq!(broken.line_of("a.b"), 2);
    }
}
