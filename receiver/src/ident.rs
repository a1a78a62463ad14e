//! SQL identifiers. PostgreSQL and SQLite quote them alike: in double quotes, a `"` inside doubled.
//! Every name built into a statement goes through [`quote`], so any source name works (`a"b`,
//! `x;DROP TABLE y`, mixed case, dots).

/// `name` as a quoted SQL identifier.
pub fn quote(name: &str) -> String {
    let mut q = String::with_capacity(name.len() + 2);
    q.push('"');
    for ch in name.chars() {
        if ch == '"' {
            q.push('"');
        }
        q.push(ch);
    }
    q.push('"');
    q
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote(schema), quote(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_by_doubling() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote("x;DROP TABLE y"), "\"x;DROP TABLE y\"");
        assert_eq!(qualified("a.b", "c"), "\"a.b\".\"c\"");
    }
}
