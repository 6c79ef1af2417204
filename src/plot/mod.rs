//! Pictures as SVG, drawn with `plotters` (its SVG backend only): attention heatmaps
//! ([`heatmap`]) and learning curves ([`curves`]).
pub mod curves;
pub mod heatmap;

use plotters::drawing::DrawingAreaErrorKind;

use crate::error::Error;

/// A plotters drawing error as [`Error::Plot`] naming `what`.
fn plot_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl Fn(DrawingAreaErrorKind<E>) -> Error {
    move |e| Error::Plot {
        what: what.to_string(),
        source: Box::new(e),
    }
}
