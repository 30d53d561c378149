//! Validation and ordering of workflow dependency graphs.
//!
//! A workflow arrives as a list of tasks, each naming the keys of the tasks it depends on.
//! [`topo_order`] rejects anything that cannot run to completion (unknown keys, cycles, ...) and
//! otherwise returns an order in which the tasks can be created so that every dependency exists
//! before its dependents.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;

/// Upper bound on tasks per workflow; bounds the work of one request.
pub const MAX_WORKFLOW_TASKS: usize = 1000;

/// How many keys of a cycle the error message spells out before eliding the rest, so that a
/// 1000-task cycle does not produce a 20 KB error `detail`.
const CYCLE_KEYS_SHOWN: usize = 12;

/// One task of a workflow as the graph sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DagNode<'a> {
    pub key: &'a str,
    pub depends_on: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("a workflow needs at least one task")]
    Empty,
    #[error("a workflow may have at most {max} tasks, got {got}")]
    TooManyTasks { max: usize, got: usize },
    /// A blank `key`, or a blank entry in some task's `depends_on`.
    #[error("task keys must not be empty (neither in `key` nor in `depends_on`)")]
    EmptyKey,
    #[error("task key '{0}' is used more than once")]
    DuplicateKey(String),
    #[error("task '{task}' depends on unknown key '{missing}'")]
    UnknownKey { task: String, missing: String },
    #[error("task '{0}' depends on itself")]
    SelfDependency(String),
    /// The keys of one cycle: each depends on the next, and the last on the first.
    #[error("{}", describe_cycle(.0))]
    Cycle(Vec<String>),
}

fn describe_cycle(keys: &[String]) -> String {
    let mut out = String::from("tasks form a dependency cycle: ");
    let shown = keys.len().min(CYCLE_KEYS_SHOWN);
    for key in keys.iter().take(shown) {
        let _ = write!(out, "'{key}' -> ");
    }
    if shown < keys.len() {
        let _ = write!(out, "... ({} more) -> ", keys.len() - shown);
    }
    if let Some(first) = keys.first() {
        let _ = write!(out, "'{first}'");
    }
    out.push_str(" (each task depends on the next)");
    out
}

/// Validates a workflow graph and returns node indices in an order where every dependency comes
/// before its dependents.
///
/// The order is stable: among tasks that are ready at the same time the one listed first goes
/// first, so a workflow that is already written in dependency order comes back unchanged. That
/// makes the order (and the ids the caller assigns along it) predictable for the poster.
///
/// Repeated entries in one `depends_on` are tolerated and mean the same as one.
///
/// Kahn's algorithm with a min-heap as the ready set: O((V + E) log V), where the log factor
/// buys the stable order and is negligible at [`MAX_WORKFLOW_TASKS`].
pub fn topo_order(nodes: &[DagNode<'_>]) -> Result<Vec<usize>, DagError> {
    if nodes.is_empty() {
        return Err(DagError::Empty);
    }
    if nodes.len() > MAX_WORKFLOW_TASKS {
        return Err(DagError::TooManyTasks {
            max: MAX_WORKFLOW_TASKS,
            got: nodes.len(),
        });
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        if is_blank(node.key) {
            return Err(DagError::EmptyKey);
        }
        if index.insert(node.key, i).is_some() {
            return Err(DagError::DuplicateKey(node.key.to_owned()));
        }
    }

    // deps[i] = indices node i waits for; dependents[j] = nodes waiting for j. Both keep
    // repeated entries so that in-degrees and decrements stay in step.
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        let mut mine = Vec::with_capacity(node.depends_on.len());
        for dep in node.depends_on {
            if is_blank(dep) {
                return Err(DagError::EmptyKey);
            }
            let Some(&j) = index.get(dep.as_str()) else {
                return Err(DagError::UnknownKey {
                    task: node.key.to_owned(),
                    missing: dep.clone(),
                });
            };
            if j == i {
                return Err(DagError::SelfDependency(node.key.to_owned()));
            }
            mine.push(j);
            dependents[j].push(i);
        }
        deps.push(mine);
    }

    let mut pending: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> = pending
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }

    if order.len() == nodes.len() {
        Ok(order)
    } else {
        Err(DagError::Cycle(find_cycle(nodes, &deps, &pending)))
    }
}

fn is_blank(key: &str) -> bool {
    key.trim().is_empty()
}

/// Extracts one cycle from what Kahn's algorithm left behind.
///
/// Every node still pending waits for at least one other pending node, so following pending
/// dependencies from any of them must revisit a node; the walk from that node back to itself is
/// a cycle. Starting at the first pending node and following the first pending dependency keeps
/// the answer deterministic.
fn find_cycle(nodes: &[DagNode<'_>], deps: &[Vec<usize>], pending: &[usize]) -> Vec<String> {
    let is_pending = |i: usize| pending[i] > 0;
    let Some(start) = (0..nodes.len()).find(|&i| is_pending(i)) else {
        return Vec::new();
    };

    let mut position_on_path: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut path: Vec<usize> = Vec::new();
    let mut current = start;
    let cycle_start = loop {
        if let Some(pos) = position_on_path[current] {
            break pos;
        }
        position_on_path[current] = Some(path.len());
        path.push(current);
        match deps[current].iter().copied().find(|&d| is_pending(d)) {
            Some(next) => current = next,
            // Unreachable by the invariant above; report the walk rather than nothing.
            None => break 0,
        }
    };

    let mut cycle = path.split_off(cycle_start);
    // Rotate so the cycle starts at its earliest-listed task: the same cycle always reads the
    // same way, whichever node the walk happened to enter it by.
    if let Some(min_pos) = cycle
        .iter()
        .enumerate()
        .min_by_key(|&(_, &i)| i)
        .map(|(p, _)| p)
    {
        cycle.rotate_left(min_pos);
    }
    cycle.into_iter().map(|i| nodes[i].key.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Owned spec of a workflow: (key, depends_on).
    type Spec = Vec<(String, Vec<String>)>;

    fn spec(items: &[(&str, &[&str])]) -> Spec {
        items
            .iter()
            .map(|(k, ds)| {
                (
                    (*k).to_owned(),
                    ds.iter().map(|d| (*d).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn order(s: &Spec) -> Result<Vec<usize>, DagError> {
        let nodes: Vec<DagNode<'_>> = s
            .iter()
            .map(|(k, ds)| DagNode {
                key: k,
                depends_on: ds,
            })
            .collect();
        topo_order(&nodes)
    }

    fn keys_in_order(s: &Spec) -> Vec<String> {
        order(s)
            .unwrap()
            .into_iter()
            .map(|i| s[i].0.clone())
            .collect()
    }

    /// Every index exactly once, and every dependency before its dependent.
    fn assert_valid_order(s: &Spec, ord: &[usize]) {
        let mut pos = vec![usize::MAX; s.len()];
        for (p, &i) in ord.iter().enumerate() {
            assert_eq!(pos[i], usize::MAX, "index {i} twice");
            pos[i] = p;
        }
        assert!(pos.iter().all(|&p| p != usize::MAX), "missing index");
        let by_key: HashMap<&str, usize> = s
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.as_str(), i))
            .collect();
        for (i, (_, ds)) in s.iter().enumerate() {
            for d in ds {
                assert!(
                    pos[by_key[d.as_str()]] < pos[i],
                    "{d} must precede {}",
                    s[i].0
                );
            }
        }
    }

    /// The reported cycle is real: distinct keys, each depending on the next, the last on the first.
    fn assert_real_cycle(s: &Spec, cycle: &[String]) {
        assert!(cycle.len() >= 2, "{cycle:?}");
        let deps: HashMap<&str, &Vec<String>> = s.iter().map(|(k, d)| (k.as_str(), d)).collect();
        let mut seen = std::collections::HashSet::new();
        for (i, k) in cycle.iter().enumerate() {
            assert!(seen.insert(k), "{k} twice in {cycle:?}");
            let next = &cycle[(i + 1) % cycle.len()];
            assert!(
                deps[k.as_str()].contains(next),
                "{k} does not depend on {next}"
            );
        }
    }

    #[test]
    fn single_task() {
        assert_eq!(order(&spec(&[("a", &[])])).unwrap(), vec![0]);
    }

    #[test]
    fn diamond() {
        let s = spec(&[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])]);
        assert_eq!(keys_in_order(&s), ["a", "b", "c", "d"]);
    }

    #[test]
    fn parallel_branches_keep_input_order() {
        let s = spec(&[
            ("x1", &[]),
            ("y1", &[]),
            ("x2", &["x1"]),
            ("y2", &["y1"]),
            ("join", &["x2", "y2"]),
        ]);
        assert_eq!(order(&s).unwrap(), vec![0, 1, 2, 3, 4]);

        let s = spec(&[("x2", &["x1"]), ("y2", &["y1"]), ("y1", &[]), ("x1", &[])]);
        assert_eq!(keys_in_order(&s), ["y1", "y2", "x1", "x2"]);
    }

    #[test]
    fn already_sorted_input_comes_back_unchanged() {
        let s = spec(&[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &["c", "a"])]);
        assert_eq!(order(&s).unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn repeated_dependency_counts_once() {
        let s = spec(&[("b", &["a", "a"]), ("a", &[])]);
        assert_eq!(keys_in_order(&s), ["a", "b"]);
    }

    #[test]
    fn empty_and_too_many() {
        assert_eq!(order(&Vec::new()), Err(DagError::Empty));

        let chain: Spec = (0..MAX_WORKFLOW_TASKS)
            .map(|i| {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("t{}", i - 1)]
                };
                (format!("t{i}"), deps)
            })
            .collect();
        assert_eq!(
            order(&chain).unwrap(),
            (0..MAX_WORKFLOW_TASKS).collect::<Vec<_>>()
        );

        let mut too_many = chain;
        too_many.push(("extra".into(), vec![]));
        let err = order(&too_many).unwrap_err();
        assert_eq!(
            err,
            DagError::TooManyTasks {
                max: 1000,
                got: 1001
            }
        );
        assert_eq!(
            err.to_string(),
            "a workflow may have at most 1000 tasks, got 1001"
        );
    }

    #[test]
    fn two_cycle() {
        let s = spec(&[("a", &["b"]), ("b", &["a"])]);
        assert_eq!(
            order(&s),
            Err(DagError::Cycle(vec!["a".into(), "b".into()]))
        );
    }

    #[test]
    fn cycle_downstream_of_valid_part() {
        // root is fine; x -> y -> z -> x is a cycle; w only depends on the cycle.
        let s = spec(&[
            ("root", &[]),
            ("w", &["x"]),
            ("x", &["root", "y"]),
            ("y", &["z"]),
            ("z", &["x"]),
        ]);
        match order(&s) {
            Err(DagError::Cycle(c)) => {
                assert_eq!(c, ["x", "y", "z"]);
                assert_real_cycle(&s, &c);
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn long_cycle() {
        let n = MAX_WORKFLOW_TASKS;
        let s: Spec = (0..n)
            .map(|i| (format!("t{i}"), vec![format!("t{}", (i + 1) % n)]))
            .collect();
        let err = order(&s).unwrap_err();
        let DagError::Cycle(c) = &err else {
            panic!("expected a cycle, got {err:?}")
        };
        assert_eq!(c.len(), n);
        assert_eq!(c[0], "t0");
        assert_real_cycle(&s, c);
        let msg = err.to_string();
        assert!(
            msg.starts_with("tasks form a dependency cycle: 't0' -> 't1' -> "),
            "{msg}"
        );
        assert!(msg.contains("... (988 more) -> 't0'"), "{msg}");
        assert!(msg.len() < 300, "{msg}");
    }

    #[test]
    fn cycle_message() {
        let err = DagError::Cycle(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(
            err.to_string(),
            "tasks form a dependency cycle: 'a' -> 'b' -> 'c' -> 'a' (each task depends on the next)"
        );
    }

    #[test]
    fn self_dependency() {
        let s = spec(&[("a", &[]), ("b", &["a", "b"])]);
        let err = order(&s).unwrap_err();
        assert_eq!(err, DagError::SelfDependency("b".into()));
        assert_eq!(err.to_string(), "task 'b' depends on itself");
    }

    #[test]
    fn unknown_key() {
        let s = spec(&[("a", &[]), ("b", &["a", "x"])]);
        let err = order(&s).unwrap_err();
        assert_eq!(
            err,
            DagError::UnknownKey {
                task: "b".into(),
                missing: "x".into()
            }
        );
        assert_eq!(err.to_string(), "task 'b' depends on unknown key 'x'");
    }

    #[test]
    fn duplicate_key() {
        let s = spec(&[("a", &[]), ("b", &[]), ("a", &["b"])]);
        let err = order(&s).unwrap_err();
        assert_eq!(err, DagError::DuplicateKey("a".into()));
        assert_eq!(err.to_string(), "task key 'a' is used more than once");
    }

    #[test]
    fn empty_keys() {
        assert_eq!(order(&spec(&[("", &[])])), Err(DagError::EmptyKey));
        assert_eq!(
            order(&spec(&[("a", &[]), ("  ", &[])])),
            Err(DagError::EmptyKey)
        );
        assert_eq!(order(&spec(&[("a", &[""])])), Err(DagError::EmptyKey));
        assert_eq!(
            order(&spec(&[("a", &[]), ("b", &["a", " "])])),
            Err(DagError::EmptyKey)
        );
    }

    /// A random DAG over `n` nodes (edges from lower to higher original index), its nodes listed
    /// in a shuffled order. Node `j` depends on up to 3 earlier nodes.
    fn shuffled_dag(max_nodes: usize) -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<usize>)> {
        (1..=max_nodes).prop_flat_map(|n| {
            let deps = proptest::collection::vec(
                proptest::collection::vec(any::<proptest::sample::Index>(), 0..=3),
                n,
            );
            let perm = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            (deps, perm).prop_map(|(raw, perm)| {
                let deps = raw
                    .into_iter()
                    .enumerate()
                    .map(|(j, picks)| {
                        if j == 0 {
                            Vec::new()
                        } else {
                            picks.into_iter().map(|p| p.index(j)).collect()
                        }
                    })
                    .collect();
                (deps, perm)
            })
        })
    }

    /// Lists the original nodes in `perm` order, naming node `i` as `t{i}`.
    fn to_spec(deps: &[Vec<usize>], perm: &[usize]) -> Spec {
        perm.iter()
            .map(|&orig| {
                (
                    format!("t{orig}"),
                    deps[orig].iter().map(|d| format!("t{d}")).collect(),
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn random_dags_get_a_valid_order((deps, perm) in shuffled_dag(60)) {
            let s = to_spec(&deps, &perm);
            let ord = order(&s).unwrap();
            assert_valid_order(&s, &ord);
        }

        #[test]
        fn injected_back_edge_is_reported_as_cycle(
            ((deps, perm), chain) in shuffled_dag(40)
                .prop_filter("needs two nodes", |(d, _)| d.len() >= 2)
                .prop_flat_map(|(d, p)| {
                    let n = d.len();
                    let chain = proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 2..=n);
                    (Just((d, p)), chain)
                })
        ) {
            // Thread a forward path through the chain, then close it with a back edge from its
            // first node to its last: that is a cycle whatever else the graph holds.
            let mut deps = deps;
            for w in chain.windows(2) {
                deps[w[1]].push(w[0]);
            }
            let (first, last) = (chain[0], chain[chain.len() - 1]);
            deps[first].push(last);

            let s = to_spec(&deps, &perm);
            match order(&s) {
                Err(DagError::Cycle(c)) => assert_real_cycle(&s, &c),
                other => prop_assert!(false, "expected a cycle, got {:?}", other),
            }
        }
    }
}
