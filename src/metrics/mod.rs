#[derive(Debug, thiserror::Error)]
#[error("metrics")]
pub struct MetricsError;
pub mod bleu {
    pub fn corpus_score(_h: &[String], _r: &[Vec<String>]) -> Result<f64, super::MetricsError> {
        Ok(0.0)
    }
}
