//! The open-file limit a process raises at start. A test binary of its own: the limit is the
//! whole process's, and the other tests open sockets by the hundred.

use rustix::process::{getrlimit, setrlimit, Resource};

#[test]
fn the_soft_limit_is_raised_to_the_hard_one_once() {
    let mut limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum;
    // As a deployment with the common soft default starts (a lower soft limit is always allowed).
    let low = hard.map_or(256, |hard| (hard / 2).min(256));
    limit.current = Some(low);
    setrlimit(Resource::Nofile, limit).unwrap();
    assert_eq!(cocoon_serve::file_limit(), Some(low));

    let raised = cocoon_serve::raise_file_limit().unwrap();

    let expected = hard.unwrap_or(1 << 20);
    assert_eq!(raised, Some((low, expected)));
    assert_eq!(cocoon_serve::file_limit(), Some(expected));
    assert_eq!(
        getrlimit(Resource::Nofile).maximum,
        hard,
        "the hard limit stays"
    );
    assert_eq!(cocoon_serve::raise_file_limit().unwrap(), None);
}
