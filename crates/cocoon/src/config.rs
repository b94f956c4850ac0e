//! Role configuration from three layers: built-in defaults, a TOML file (`--config`), and flags
//! given on the command line, later layers winning. Keys of the file are the flags' names with
//! `_` for `-`, so one name documents both; `--print-config` prints the effective result with
//! each option's help as a comment.

use std::path::Path;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The effective configuration of type `C` for a role whose flags were parsed into `matches`.
pub fn resolve<C>(matches: &ArgMatches, file: Option<&Path>) -> anyhow::Result<C>
where
    C: FromArgMatches + Serialize + DeserializeOwned,
{
    let from_flags = C::from_arg_matches(matches)?;
    let mut table = toml::Table::try_from(&from_flags).context("encoding the configuration")?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration file {}", path.display()))?;
        let from_file: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (key, value) in from_file {
            if !table.contains_key(&key) {
                bail!(
                    "unknown option `{key}` in {} (known: {})",
                    path.display(),
                    table.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let from_command_line = matches!(
                matches.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !from_command_line {
                table.insert(key, value);
            }
        }
    }
    toml::Value::Table(table)
        .try_into()
        .with_context(|| match file {
            Some(path) => format!("invalid value in {}", path.display()),
            None => "invalid configuration".to_owned(),
        })
}

/// `config` as TOML, each key preceded by its flag's help text.
pub fn render<C: Serialize>(config: &C, command: &Command) -> anyhow::Result<String> {
    let table = toml::Table::try_from(config).context("encoding the configuration")?;
    let mut out = String::new();
    for arg in command.get_arguments() {
        let key = arg.get_id().as_str();
        let Some(value) = table.get(key) else {
            continue;
        };
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            for line in help.to_string().lines() {
                out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
            }
        }
        let mut entry = toml::Table::new();
        entry.insert(key.to_owned(), value.clone());
        out.push_str(&toml::to_string(&entry)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, CommandFactory, Parser};
    use serde::Deserialize;

    #[derive(Debug, Clone, Args, Serialize, Deserialize, PartialEq)]
    struct Sample {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: String,
        /// How many.
        #[arg(long, default_value_t = 3)]
        count: u32,
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sample: Sample,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let config = file("listen = \"0.0.0.0:9\"\ncount = 7\n");
        let matches = Cli::command().get_matches_from(["x", "--count", "5"]);
        let sample: Sample = resolve(&matches, Some(config.path())).unwrap();
        assert_eq!(
            sample,
            Sample {
                listen: "0.0.0.0:9".into(),
                count: 5
            }
        );
        let defaults: Sample = resolve(&Cli::command().get_matches_from(["x"]), None).unwrap();
        assert_eq!(defaults.count, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let matches = Cli::command().get_matches_from(["x"]);
        let unknown = resolve::<Sample>(&matches, Some(file("colour = 1\n").path())).unwrap_err();
        assert!(format!("{unknown:#}").contains("unknown option `colour`"));
        let bad = resolve::<Sample>(&matches, Some(file("count = \"many\"\n").path())).unwrap_err();
        assert!(format!("{bad:#}").contains("invalid value"));
    }

    #[test]
    fn rendering_comments_every_key_and_reads_back() {
        let command = Cli::command();
        let sample = Sample {
            listen: "a:1".into(),
            count: 9,
        };
        let text = render(&sample, &command).unwrap();
        assert!(
            text.contains("# Where to listen\nlisten = \"a:1\""),
            "{text}"
        );
        let back: Sample = toml::from_str(&text).unwrap();
        assert_eq!(back, sample);
    }
}
