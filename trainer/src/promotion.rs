//! Which fitted models a run promotes: a model the engine would refuse is never written, and one that
//! does not beat its best baseline on the validation data is promoted only by `--force`.

use augur_engine::model::{Evaluation, Model, ModelFile, ModelKind, TrainingWindow, FORMAT_VERSION};
use augur_engine::telemetry::SCHEMA_VERSION;

use crate::error::FitError;
use crate::{Fitted, ModelResult, ModelStatus};

/// Judges each model kind's fit in turn, collecting every result and the files to promote.
pub struct Judge<'a> {
    version: &'a str,
    /// First and last dispatch time in the data, µs since the Unix epoch.
    data_window_us: (i64, i64),
    force: bool,
    results: Vec<ModelResult>,
    promoted: Vec<ModelFile>,
}

impl<'a> Judge<'a> {
    /// A judge for run `version` over data spanning `data_window_us`; `force` promotes what does not
    /// beat its baseline.
    pub fn new(version: &'a str, data_window_us: (i64, i64), force: bool) -> Self {
        Self {
            version,
            data_window_us,
            force,
            results: Vec::new(),
            promoted: Vec::new(),
        }
    }

    /// Judges the fit of `kind` (or why it could not be fitted).
    pub fn judge(&mut self, kind: ModelKind, fitted: Result<Fitted<Model>, FitError>) {
        let fitted = match fitted {
            Ok(fitted) => fitted,
            Err(why) => {
                return self
                    .results
                    .push(ModelResult::skipped(kind, why.to_string(), None))
            }
        };
        let file = ModelFile {
            format_version: FORMAT_VERSION,
            version: self.version.to_owned(),
            telemetry_schema_version: SCHEMA_VERSION,
            training: TrainingWindow {
                start_us: self.data_window_us.0,
                end_us: self.data_window_us.1,
                training_rows: fitted.training_rows,
                validation_rows: fitted.validation_rows,
            },
            evaluation: fitted.evaluation.clone(),
            model: fitted.model,
        };
        // The engine will refuse what it cannot evaluate; never write such a file.
        if let Err(e) = file.validate() {
            let reason = format!("the fit produced a model the engine would refuse: {e}");
            return self
                .results
                .push(ModelResult::skipped(kind, reason, Some(fitted.evaluation)));
        }
        let (status, reason) = verdict(&fitted.evaluation, self.force);
        if matches!(status, ModelStatus::Promoted | ModelStatus::Forced) {
            self.promoted.push(file);
        }
        self.results.push(ModelResult {
            kind,
            status,
            reason,
            evaluation: Some(fitted.evaluation),
            training_rows: fitted.training_rows,
            validation_rows: fitted.validation_rows,
            file: None,
        });
    }

    /// Every kind's result, in the order judged, and the files to promote.
    pub fn into_parts(self) -> (Vec<ModelResult>, Vec<ModelFile>) {
        (self.results, self.promoted)
    }
}

/// Whether a fitted model is promoted, and why.
fn verdict(evaluation: &Evaluation, force: bool) -> (ModelStatus, String) {
    let metric = &evaluation.decisive_metric;
    let model = evaluation.model.get(metric).copied().unwrap_or(f64::NAN);
    match evaluation.best_baseline() {
        None => (
            ModelStatus::Promoted,
            format!("{metric} {model:.4}; no baseline to beat"),
        ),
        Some((name, best)) if evaluation.beats_baselines() => (
            ModelStatus::Promoted,
            format!("{metric} {model:.4} beats {name}'s {best:.4}"),
        ),
        Some((name, best)) if force => (
            ModelStatus::Forced,
            format!("{metric} {model:.4} does not beat {name}'s {best:.4}; promoted by --force"),
        ),
        Some((name, best)) => (
            ModelStatus::NotPromoted,
            format!("{metric} {model:.4} does not beat {name}'s {best:.4}; the previous model stays active"),
        ),
    }
}
