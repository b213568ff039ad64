//! From a backend's Prometheus exposition to augur's scraped features: presets for vLLM, Triton and
//! DCGM, or a custom mapping. Counts (queue, running) add up over series; shares (cache, utilisation,
//! memory) average over them, so a node with several GPUs reads as their mean.

use augur_engine::hash;
use augur_engine::scraped::{Adapters, ScrapedMetrics};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

use crate::config::{MetricSource, MetricsConfig, MetricsPreset, ScrapedFeature};

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// A metrics page that is not Prometheus text format; holds what the parser said.
#[derive(Debug, thiserror::Error)]
#[error("not Prometheus text format: {0}")]
pub struct NotExposition(String);

/// Parses `text` and reads the configured features from it. Every family must carry its `# TYPE`
/// line, as vLLM, Triton and DCGM exporters do (the parser groups undeclared samples together).
pub fn extract(text: &str, config: &MetricsConfig) -> Result<ScrapedMetrics, NotExposition> {
    if text.trim().is_empty() {
        // A server with nothing to report yet: no values, not an error.
        return Ok(ScrapedMetrics::default());
    }
    let exposition = parse_prometheus(text).map_err(|e| NotExposition(format!("{e:?}")))?;
    Ok(match config.preset {
        Some(MetricsPreset::Vllm) => ScrapedMetrics {
            queue_depth: sum(&exposition, "vllm:num_requests_waiting"),
            running_requests: sum(&exposition, "vllm:num_requests_running"),
            kv_cache_usage: mean(&exposition, "vllm:kv_cache_usage_perc")
                .or_else(|| mean(&exposition, "vllm:gpu_cache_usage_perc")),
            adapters: vllm_adapters(&exposition),
            kv_cache_tokens: vllm_cache_tokens(&exposition),
            ..ScrapedMetrics::default()
        },
        Some(MetricsPreset::Triton) => ScrapedMetrics {
            gpu_utilization: mean(&exposition, "nv_gpu_utilization"),
            gpu_memory_fraction: ratio(
                sum(&exposition, "nv_gpu_memory_used_bytes"),
                sum(&exposition, "nv_gpu_memory_total_bytes"),
            ),
            ..ScrapedMetrics::default()
        },
        Some(MetricsPreset::Dcgm) => {
            let used = sum(&exposition, "DCGM_FI_DEV_FB_USED");
            let free = sum(&exposition, "DCGM_FI_DEV_FB_FREE");
            ScrapedMetrics {
                gpu_utilization: mean(&exposition, "DCGM_FI_DEV_GPU_UTIL").map(|percent| percent / 100.0),
                gpu_memory_fraction: ratio(used, used.zip(free).map(|(u, f)| u + f)),
                ..ScrapedMetrics::default()
            }
        }
        None => {
            let read = |feature, counts: bool| {
                config
                    .custom
                    .get(&feature)
                    .and_then(|source| custom(&exposition, source, counts))
            };
            ScrapedMetrics {
                queue_depth: read(ScrapedFeature::QueueDepth, true),
                running_requests: read(ScrapedFeature::RunningRequests, true),
                kv_cache_usage: read(ScrapedFeature::KvCacheUsage, false),
                gpu_utilization: read(ScrapedFeature::GpuUtilization, false),
                gpu_memory_fraction: read(ScrapedFeature::GpuMemoryFraction, false),
                adapters: None,
                kv_cache_tokens: None,
            }
        }
    })
}

/// The LoRA adapters of `vllm:lora_requests_info`: vLLM sets the series of the current running and
/// waiting lists to the time of the change, and keeps earlier lists' series, so the latest value
/// names the lists in force. Names are comma-separated; each is kept as its hash.
fn vllm_adapters(exposition: &Exposition) -> Option<Adapters> {
    let family = exposition.families.get("vllm:lora_requests_info")?;
    let latest = family
        .iter_samples()
        .filter_map(|sample| {
            let at = match &sample.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                _ => return None,
            };
            Some((at, sample.get_labelset().ok()?))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))?
        .1;
    let names = |label: &str| -> Vec<u64> {
        latest
            .get_label_value(label)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| hash::key(name.as_bytes()))
            .collect()
    };
    let max = latest
        .get_label_value("max_lora")
        .and_then(|m| m.trim().parse().ok());
    Some(Adapters::new(
        names("running_lora_adapters"),
        names("waiting_lora_adapters"),
        max,
    ))
}

/// The KV cache's size in tokens from `vllm:cache_config_info`, whose labels carry the engine's
/// cache configuration: `num_gpu_blocks` blocks of `block_size` tokens (summed over series, as a
/// node's several engines each have a cache).
fn vllm_cache_tokens(exposition: &Exposition) -> Option<f64> {
    let family = exposition.families.get("vllm:cache_config_info")?;
    let tokens: Vec<f64> = family
        .iter_samples()
        .filter_map(|sample| {
            let labels = sample.get_labelset().ok()?;
            let label = |name| -> Option<f64> {
                let value: f64 = labels.get_label_value(name)?.trim().parse().ok()?;
                (value.is_finite() && value > 0.0).then_some(value)
            };
            Some(label("num_gpu_blocks")? * label("block_size")?)
        })
        .collect();
    (!tokens.is_empty()).then(|| tokens.iter().sum())
}

/// Values of every series of `name` whose labels include `filter`.
fn values(exposition: &Exposition, name: &str, filter: &[(&str, &str)]) -> Vec<f64> {
    let Some(family) = exposition.families.get(name) else {
        return Vec::new();
    };
    family
        .iter_samples()
        .filter(|sample| {
            filter.is_empty()
                || sample
                    .get_labelset()
                    .is_ok_and(|labels| filter.iter().all(|(k, v)| labels.get_label_value(k) == Some(*v)))
        })
        .filter_map(|sample| match &sample.value {
            PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
            PrometheusValue::Counter(c) => Some(c.value.as_f64()),
            _ => None,
        })
        .filter(|v| v.is_finite())
        .collect()
}

fn sum(exposition: &Exposition, name: &str) -> Option<f64> {
    let v = values(exposition, name, &[]);
    (!v.is_empty()).then(|| v.iter().sum())
}

fn mean(exposition: &Exposition, name: &str) -> Option<f64> {
    let v = values(exposition, name, &[]);
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn ratio(part: Option<f64>, whole: Option<f64>) -> Option<f64> {
    part.zip(whole).filter(|(_, w)| *w > 0.0).map(|(p, w)| p / w)
}

fn custom(exposition: &Exposition, source: &MetricSource, counts: bool) -> Option<f64> {
    let filter: Vec<(&str, &str)> = source
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let v = values(exposition, &source.metric, &filter);
    if v.is_empty() {
        return None;
    }
    let combined = if counts {
        v.iter().sum()
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    Some(combined * source.scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn preset(preset: MetricsPreset) -> MetricsConfig {
        MetricsConfig {
            path: "/metrics".into(),
            interval: std::time::Duration::from_secs(1),
            timeout: None,
            preset: Some(preset),
            custom: BTreeMap::new(),
        }
    }

    const VLLM: &str = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"llama-3-8b\"} 7.0
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name=\"llama-3-8b\"} 12.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name=\"llama-3-8b\"} 0.625
";

    #[test]
    fn reads_vllms_latest_lora_lists() {
        let text = "# HELP vllm:lora_requests_info Running stats on lora requests.\n\
                    # TYPE vllm:lora_requests_info gauge\n\
                    vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"a\",waiting_lora_adapters=\"\"} 100.0\n\
                    vllm:lora_requests_info{max_lora=\"2\",running_lora_adapters=\"b,c\",waiting_lora_adapters=\"a\"} 250.5\n";
        let adapters = extract(text, &preset(MetricsPreset::Vllm))
            .unwrap()
            .adapters
            .unwrap();
        let key = |name: &str| hash::key(name.as_bytes());
        assert_eq!(adapters.max, Some(2));
        assert_eq!(adapters.affinity(key("b")), 1.0, "the latest lists: b and c run");
        assert_eq!(adapters.affinity(key("a")), 0.6, "a waits; no room");
        let none = extract(
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n",
            &preset(MetricsPreset::Vllm),
        );
        assert_eq!(
            none.unwrap().adapters,
            None,
            "a server without adapters says nothing of them"
        );
    }

    #[test]
    fn reads_vllms_cache_size_from_its_config_labels() {
        let text = "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n\
                    # TYPE vllm:cache_config_info gauge\n\
                    vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",num_gpu_blocks=\"8192\",num_cpu_blocks=\"None\"} 1.0\n";
        let m = extract(text, &preset(MetricsPreset::Vllm)).unwrap();
        assert_eq!(m.kv_cache_tokens, Some(131_072.0));
        let unset = text.replace("8192", "None");
        let m = extract(&unset, &preset(MetricsPreset::Vllm)).unwrap();
        assert_eq!(m.kv_cache_tokens, None, "an engine not yet sized says nothing");
        assert_eq!(
            extract(VLLM, &preset(MetricsPreset::Vllm))
                .unwrap()
                .kv_cache_tokens,
            None
        );
    }

    #[test]
    fn reads_vllm_and_its_older_cache_name() {
        let m = extract(VLLM, &preset(MetricsPreset::Vllm)).unwrap();
        assert_eq!(
            (m.queue_depth, m.running_requests, m.kv_cache_usage),
            (Some(7.0), Some(12.0), Some(0.625))
        );
        let older =
            "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n";
        let m = extract(older, &preset(MetricsPreset::Vllm)).unwrap();
        assert_eq!((m.kv_cache_usage, m.queue_depth), (Some(0.5), None));
    }

    #[test]
    fn reads_triton_memory_as_a_share_over_gpus() {
        let text = "\
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid=\"GPU-a\"} 0.5
nv_gpu_utilization{gpu_uuid=\"GPU-b\"} 0.7
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-a\"} 20000000000
nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-b\"} 40000000000
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid=\"GPU-a\"} 80000000000
nv_gpu_memory_total_bytes{gpu_uuid=\"GPU-b\"} 80000000000
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model=\"m\",version=\"1\"} 123456
";
        let m = extract(text, &preset(MetricsPreset::Triton)).unwrap();
        assert!((m.gpu_utilization.unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(m.gpu_memory_fraction, Some(0.375));
    }

    #[test]
    fn reads_dcgm_percent_and_framebuffer() {
        let text = "\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-a\"} 90
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu=\"0\",UUID=\"GPU-a\"} 60000
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu=\"0\",UUID=\"GPU-a\"} 20000
";
        let m = extract(text, &preset(MetricsPreset::Dcgm)).unwrap();
        assert_eq!(
            (m.gpu_utilization, m.gpu_memory_fraction),
            (Some(0.9), Some(0.75))
        );
    }

    #[test]
    fn a_custom_mapping_filters_by_label_and_scales() {
        let mut custom = BTreeMap::new();
        let labels = BTreeMap::from([("model".to_owned(), "a".to_owned())]);
        custom.insert(
            ScrapedFeature::QueueDepth,
            MetricSource {
                metric: "queue".into(),
                labels,
                scale: 1.0,
            },
        );
        custom.insert(
            ScrapedFeature::GpuUtilization,
            MetricSource {
                metric: "util_pct".into(),
                labels: BTreeMap::new(),
                scale: 0.01,
            },
        );
        let config = MetricsConfig {
            preset: None,
            custom,
            ..preset(MetricsPreset::Vllm)
        };
        let text = "# TYPE queue gauge\nqueue{model=\"a\"} 3\nqueue{model=\"b\"} 100\n# TYPE util_pct gauge\nutil_pct 42\n";
        let m = extract(text, &config).unwrap();
        assert_eq!((m.queue_depth, m.gpu_utilization), (Some(3.0), Some(0.42)));
    }

    #[test]
    fn malformed_text_is_an_error_not_zeros() {
        for garbage in [
            "{\"not\": \"prometheus\"}",
            "vllm:num_requests_waiting{model_name=\"x\" 7\n",
            "<html>500</html>",
        ] {
            assert!(
                extract(garbage, &preset(MetricsPreset::Vllm)).is_err(),
                "{garbage}"
            );
        }
        assert_eq!(
            extract("", &preset(MetricsPreset::Vllm)).unwrap(),
            ScrapedMetrics::default(),
            "empty is valid and says nothing"
        );
    }

    proptest::proptest! {
        /// Whatever a backend serves on its metrics path, the parser answers without panicking.
        #[test]
        fn any_page_is_read_or_refused_without_panic(
            edits in proptest::collection::vec((0usize..600, proptest::num::u8::ANY), 0..12),
            noise in ".{0,200}",
        ) {
            let mut page = VLLM.as_bytes().to_vec();
            for (at, byte) in edits {
                let at = at % page.len();
                page[at] = byte;
            }
            let text = format!("{}{noise}", String::from_utf8_lossy(&page));
            for kind in [MetricsPreset::Vllm, MetricsPreset::Triton, MetricsPreset::Dcgm] {
                let _ = extract(&text, &preset(kind));
            }
        }
    }
}
