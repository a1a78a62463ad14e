//! Table include/exclude patterns and identifier lists, with PostgreSQL's identifier rules: unquoted
//! names are folded to lower case, double-quoted names are taken exactly (`""` is a quote), and `*`
//! as a whole part matches any name. Pure, so it is unit-tested here.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    Any,
    Exact(String),
}

impl NamePattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(n) => n == name,
        }
    }
}

/// `schema.table`, either part possibly `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    pub schema: NamePattern,
    pub table: NamePattern,
}

impl TablePattern {
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.matches(schema) && self.table.matches(table)
    }

    /// A comma-separated list of `schema.table` patterns.
    pub fn parse_list(text: &str) -> Result<Vec<TablePattern>, String> {
        split_identifiers(text)?
            .into_iter()
            .map(|parts| match parts.as_slice() {
                [schema, table] => Ok(TablePattern {
                    schema: schema.clone(),
                    table: table.clone(),
                }),
                _ => Err(format!(
                    "{text:?}: each entry must be schema.table (either part may be *)"
                )),
            })
            .collect()
    }
}

/// True when the table passes the include list (empty: everything) and no exclude pattern.
pub fn table_selected(
    include: &[TablePattern],
    exclude: &[TablePattern],
    schema: &str,
    table: &str,
) -> bool {
    (include.is_empty() || include.iter().any(|p| p.matches(schema, table)))
        && !exclude.iter().any(|p| p.matches(schema, table))
}

/// A comma-separated list of plain names (publication names), like pgoutput's `publication_names`.
pub fn parse_name_list(text: &str) -> Result<Vec<String>, String> {
    split_identifiers(text)?
        .into_iter()
        .map(|parts| match parts.as_slice() {
            [NamePattern::Exact(n)] => Ok(n.clone()),
            _ => Err(format!(
                "{text:?}: expected a comma-separated list of names"
            )),
        })
        .collect()
}

/// Splits `a.b, "c.d".*` into entries of dot-separated parts.
fn split_identifiers(text: &str) -> Result<Vec<Vec<NamePattern>>, String> {
    let mut entries = Vec::new();
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let part = match chars.peek() {
            None if parts.is_empty() && entries.is_empty() => return Ok(entries),
            None => return Err(format!("{text:?}: a name is missing at the end")),
            Some('"') => {
                chars.next();
                let mut name = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("{text:?}: unterminated quoted name")),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            name.push('"');
                        }
                        Some('"') => break,
                        Some(c) => name.push(c),
                    }
                }
                if name.is_empty() {
                    return Err(format!("{text:?}: empty quoted name"));
                }
                NamePattern::Exact(name)
            }
            Some(_) => {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == ',' || c.is_whitespace() || c == '"' {
                        break;
                    }
                    name.push(c.to_ascii_lowercase());
                    chars.next();
                }
                match name.as_str() {
                    "" => return Err(format!("{text:?}: a name is missing")),
                    "*" => NamePattern::Any,
                    _ => NamePattern::Exact(name),
                }
            }
        };
        parts.push(part);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some('.') => continue,
            Some(',') => entries.push(std::mem::take(&mut parts)),
            None => {
                entries.push(parts);
                return Ok(entries);
            }
            Some(c) => return Err(format!("{text:?}: unexpected {c:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_identifier_rules() {
        let p = TablePattern::parse_list(r#"Public.Ledger, "Odd"".name".*, *.audit"#).unwrap();
        assert!(p[0].matches("public", "ledger"));
        assert!(!p[0].matches("Public", "Ledger"));
        assert!(p[1].matches("Odd\".name", "anything"));
        assert!(p[2].matches("x", "audit"));
    }

    #[test]
    fn include_and_exclude_combine() {
        let inc = TablePattern::parse_list("public.*").unwrap();
        let exc = TablePattern::parse_list("public.secret").unwrap();
        assert!(table_selected(&inc, &exc, "public", "ledger"));
        assert!(!table_selected(&inc, &exc, "public", "secret"));
        assert!(!table_selected(&inc, &exc, "other", "ledger"));
        assert!(table_selected(&[], &[], "any", "thing"));
    }

    #[test]
    fn malformed_lists_are_errors() {
        for bad in ["a.", "a..b", "\"open", "a.b.c", "a b", ",", "\"\".x"] {
            assert!(TablePattern::parse_list(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_name_list("a.b").is_err());
        assert_eq!(parse_name_list(" p1 , \"P2\" ").unwrap(), vec!["p1", "P2"]);
    }
}
