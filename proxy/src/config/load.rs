//! Reading a config file, with errors that name the file, line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Config;

/// Why a config was refused: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `<inline>` for text not read from a file.
    pub origin: PathBuf,
    /// 1-based line and column of the offending value, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.origin.display(), self.message),
            None => write!(f, "{}: {}", self.origin.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: path.to_owned(),
            position: None,
            message: format!("cannot read config: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let at = |span: Option<Range<usize>>, message: String| ConfigError {
            origin: origin.to_owned(),
            position: span.map(|s| line_column(text, s.start)),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
        config
            .validate()
            .map_err(|invalid| at(invalid.span, invalid.message))?;
        Ok(config)
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Config;

    const EXAMPLE: &str = include_str!("../../../examples/augur.toml");

    #[test]
    fn the_example_config_is_valid() {
        Config::parse(EXAMPLE, Path::new("examples/augur.toml")).expect("the example parses");
    }

    #[test]
    fn shedding_needs_metrics_and_sane_thresholds_and_routes_take_priorities_and_objectives() {
        let config = |pool: &str| {
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"gpu\"\npriority = \"sheddable\"\n\
                 [pools.gpu]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n{pool}"
            )
        };
        let parse = |pool: &str| Config::parse(&config(pool), Path::new("t.toml")).map_err(|e| e.to_string());
        let metrics = "metrics = { preset = \"vllm\" }\n";
        let good = parse(&format!("{metrics}shedding = {{ queue_depth = 3 }}\n")).unwrap();
        let shedding = good.pools["gpu"].shedding.unwrap();
        assert_eq!((shedding.queue_depth, shedding.kv_cache_usage), (3.0, 0.8));
        let blind = parse("shedding = {}\n").unwrap_err();
        assert!(
            blind.contains("pools.gpu.shedding needs the pool's `metrics`"),
            "{blind}"
        );
        let odd = parse(&format!("{metrics}shedding = {{ kv_cache_usage = 1.5 }}\n")).unwrap_err();
        assert!(odd.contains("`kv_cache_usage` in (0, 1]"), "{odd}");
        let typo =
            Config::parse(&config("").replace("sheddable", "urgent"), Path::new("t.toml")).unwrap_err();
        assert!(typo.to_string().contains("urgent"), "{typo}");
        let queue = "queue = { max = 8, max_wait = \"250ms\" }\n";
        let held = parse(&format!(
            "{metrics}policy = {{ kind = \"predictive_ttft\" }}\n{queue}"
        ))
        .unwrap();
        let queue_config = held.pools["gpu"].queue.unwrap();
        assert_eq!((queue_config.max, queue_config.max_wait.as_millis()), (8, 250));
        let unpredicted = parse(queue).unwrap_err();
        assert!(
            unpredicted.contains("pools.gpu.queue needs `policy"),
            "{unpredicted}"
        );
        let empty = parse("policy = { kind = \"predictive_ttft\" }\nqueue = { max = 0 }\n").unwrap_err();
        assert!(empty.contains("`max` must be at least 1"), "{empty}");
        let objective = config("").replace("priority = ", "slo_ttft = \"1500ms\"\npriority = ");
        let parsed = Config::parse(&objective, Path::new("t.toml")).unwrap();
        assert_eq!(
            parsed.routes[0].slo_ttft,
            Some(std::time::Duration::from_millis(1500))
        );
    }

    #[test]
    fn workers_default_to_the_cpus_allowed_and_zero_is_refused() {
        let config = |proxy: &str| {
            format!(
                "[proxy]\n{proxy}[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
                 [pools.p]\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n"
            )
        };
        let parse =
            |proxy: &str| Config::parse(&config(proxy), Path::new("t.toml")).map_err(|e| e.to_string());
        let allowed = std::thread::available_parallelism().unwrap();
        assert_eq!(parse("").unwrap().proxy.worker_threads(), allowed);
        assert_eq!(parse("workers = 3\n").unwrap().proxy.worker_threads().get(), 3);
        let zero = parse("workers = 0\n").unwrap_err();
        assert!(zero.contains("t.toml:2:") && zero.contains("nonzero"), "{zero}");
    }

    proptest::proptest! {
        /// A config file with any bytes changed is parsed or refused with an error, never a panic,
        /// and a refusal names the file.
        #[test]
        fn any_edit_of_a_config_is_parsed_or_refused_without_panic(
            edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..8),
        ) {
            let mut bytes = EXAMPLE.as_bytes().to_vec();
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = Config::parse(&text, Path::new("edited.toml")) {
                proptest::prop_assert!(e.to_string().starts_with("edited.toml"), "{}", e);
            }
        }
    }
}
