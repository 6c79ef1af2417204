//! An attention heatmap: one cell per (target token, source token), darker for more weight,
//! source tokens along the top, target tokens down the left side.
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot_err;
use crate::alignment::Alignment;
use crate::error::Result;

/// Cell size and margins in pixels.
const CELL: i32 = 24;
const LABEL_FONT: u32 = 13;

/// Width of the label column for `labels` (a rough estimate of the text width).
fn label_space(labels: &[String]) -> i32 {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    (chars as i32 * LABEL_FONT as i32 * 6 / 10 + 12).clamp(40, 400)
}

/// The SVG document of `a`'s heatmap: one `[target x source]` grid of cells shaded from
/// white (weight 0) to dark blue (weight 1), labelled with the tokens.
pub fn heatmap_svg(a: &Alignment) -> Result<String> {
    let (cols, rows) = (a.source.len() as i32, a.target.len() as i32);
    let left = label_space(&a.target);
    let top = label_space(&a.source);
    let width = (left + cols * CELL + 16) as u32;
    let height = (top + rows * CELL + 16) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let err = plot_err("attention heatmap");
        root.fill(&WHITE).map_err(&err)?;
        let font = ("sans-serif", LABEL_FONT).into_font().color(&BLACK);
        for (j, token) in a.source.iter().enumerate() {
            let x = left + j as i32 * CELL + CELL / 2;
            let style = font
                .clone()
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(token.clone(), (x, top - 6), style))
                .map_err(&err)?;
        }
        for (i, token) in a.target.iter().enumerate() {
            let y = top + i as i32 * CELL + CELL / 2;
            let style = font.clone().pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(token.clone(), (left - 6, y), style))
                .map_err(&err)?;
            for (j, &w) in a.attention[i].iter().enumerate() {
                let x = left + j as i32 * CELL;
                let w = w.clamp(0.0, 1.0) as f64;
                // White (0) to dark blue (1).
                let shade = |c: f64| (255.0 - w * (255.0 - c)).round() as u8;
                let color = RGBColor(shade(8.0), shade(48.0), shade(107.0));
                root.draw(&Rectangle::new(
                    [(x, y - CELL / 2), (x + CELL, y + CELL / 2)],
                    color.filled(),
                ))
                .map_err(&err)?;
            }
        }
        root.draw(&Rectangle::new(
            [(left, top), (left + cols * CELL, top + rows * CELL)],
            BLACK.stroke_width(1),
        ))
        .map_err(&err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
