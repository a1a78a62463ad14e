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

/// `name` as a person would type it in SQL: as it is when it needs no quotes (lower case letters,
/// digits, `_`, `$`, not starting with a digit), else quoted. For messages: `"public.a".b` and
/// `public."a.b"` stay two names.
pub fn spelled(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    match plain {
        true => name.to_string(),
        false => quote(name),
    }
}

/// `schema.table` spelled by [`spelled`]: `public.orders`, `public."Orders"`, `"public.a".b`.
pub fn spelled_qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", spelled(schema), spelled(table))
}

/// One part of a table name or pattern, after SQL identifier rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// `*`: any name (patterns only).
    Any,
    Exact(String),
}

impl Part {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Exact(n) => n == name,
        }
    }

    /// As SQL writes it: `*`, or the exact name quoted.
    fn spelled(&self) -> String {
        match self {
            Part::Any => "*".into(),
            Part::Exact(n) => quote(n),
        }
    }
}

/// A `schema.table` name or pattern read by SQL identifier rules, the one rule for table names in
/// the configuration, the flags, figoutput's include and exclude lists, the copy and the stream
/// (DESIGN.md rule 9): an unquoted part is folded to lower case (`public.Orders` is
/// `public.orders`), a double-quoted part is exact (`public."Orders"`; `""` inside is one `"`),
/// and an unquoted `*` as a whole part, in patterns, matches any name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Part,
    pub table: Part,
}

impl TableName {
    /// Reads a pattern (`*` allowed as a whole part).
    pub fn pattern(text: &str) -> Result<TableName, String> {
        let parts = split_parts(text)?;
        match <[Part; 2]>::try_from(parts) {
            Ok([schema, table]) => Ok(TableName { schema, table }),
            Err(_) => Err(format!(
                "{text:?} is not schema.table (quote a part that holds a dot: \"my.schema\".\"t\"; unquoted names fold to lower case)"
            )),
        }
    }

    /// Reads one table's name (no `*`): its (schema, table) exactly as the catalog stores them.
    pub fn exact(text: &str) -> Result<(String, String), String> {
        match TableName::pattern(text)? {
            TableName {
                schema: Part::Exact(s),
                table: Part::Exact(t),
            } => Ok((s, t)),
            _ => Err(format!(
                "{text:?} names no single table: `*` is for patterns (quote a part named *: \"*\")"
            )),
        }
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.matches(schema) && self.table.matches(table)
    }

    /// The canonical spelling: exact parts quoted, `*` bare. Reads back to the same pattern, by
    /// figoutput's parser too.
    pub fn spelled(&self) -> String {
        format!("{}.{}", self.schema.spelled(), self.table.spelled())
    }
}

/// Splits at dots outside double quotes; folds unquoted text to lower case (ASCII, as PostgreSQL
/// does for identifiers), keeps quoted text exactly.
fn split_parts(text: &str) -> Result<Vec<Part>, String> {
    let bad = |why: &str| format!("{text:?}: {why}");
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut name = String::new();
        let mut quoted = false;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            quoted = true;
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    Some('"') => break,
                    Some(c) => name.push(c),
                    None => return Err(bad("a quote is not closed")),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '"' {
                    break;
                }
                name.push(c.to_ascii_lowercase());
                chars.next();
            }
            name = name.trim_end().to_string();
        }
        if name.is_empty() {
            return Err(bad("a name part is empty"));
        }
        parts.push(match (quoted, name.as_str()) {
            (false, "*") => Part::Any,
            _ => Part::Exact(name),
        });
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(_) => return Err(bad("a quoted part must be followed by a dot or the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_sql_identifier_rules() {
        let exact = |t: &str| TableName::exact(t);
        assert_eq!(
            exact("public.Orders"),
            Ok(("public".into(), "orders".into()))
        );
        assert_eq!(
            exact(r#"public."Orders""#),
            Ok(("public".into(), "Orders".into()))
        );
        assert_eq!(
            exact(r#""My.Schema"."a""b""#),
            Ok(("My.Schema".into(), "a\"b".into()))
        );
        assert_eq!(
            exact(r#" "x;DROP" . t "#),
            Ok(("x;DROP".into(), "t".into()))
        );
        assert!(exact("public.*").is_err());
        assert!(exact("orders").is_err());
        assert!(exact("a.b.c").is_err());
        assert!(exact(r#"public."open"#).is_err());
        assert!(exact("public.").is_err());
        let p = TableName::pattern(r#"*."Orders""#).unwrap();
        assert!(p.matches("any", "Orders") && !p.matches("any", "orders"));
        assert_eq!(
            TableName::pattern(r#"public."*""#).unwrap().table,
            Part::Exact("*".into())
        );
    }

    #[test]
    fn a_spelled_name_reads_back_to_itself() {
        for text in [
            r#"public."Orders""#,
            "Public.orders",
            r#""a""b".*"#,
            r#"*."x.y""#,
        ] {
            let p = TableName::pattern(text).unwrap();
            assert_eq!(TableName::pattern(&p.spelled()).unwrap(), p, "{text}");
        }
    }

    #[test]
    fn quotes_by_doubling() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote("x;DROP TABLE y"), "\"x;DROP TABLE y\"");
        assert_eq!(qualified("a.b", "c"), "\"a.b\".\"c\"");
    }
}
