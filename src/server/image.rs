//! Images in, classes out: an encoded JPEG or PNG (a BYTES input of an
//! inference request, or `odin infer --image FILE`) becomes the model's input
//! tensor, and a row of model outputs becomes Triton's classification
//! strings.
//!
//! # Problem
//!
//! A classifier is trained on pictures prepared one way, most often
//! torchvision's ImageNet recipe:
//!
//! ```text
//! PIL.Image.open(f).convert("RGB")
//!   -> Resize(256)           shorter side to 256, Pillow's bilinear, antialiased
//!   -> CenterCrop(224)
//!   -> ToTensor()            u8 / 255, HWC -> CHW
//!   -> Normalize(mean, std)
//! ```
//!
//! Served pictures must be prepared the same way or accuracy drops. And the
//! bytes come from anyone: a header may claim 100000x100000 pixels, a file
//! may be cut short, or it may not be a picture at all.
//!
//! # Approach
//!
//! ```text
//! bytes --sniff--> JPEG | PNG, declared W x H     (refused above MAX_PIXELS,
//!                                                   before anything is decoded)
//!       --image crate under Limits--> 8-bit grey, grey+alpha, RGB or RGBA
//!       --Pillow's bilinear resize, crop window only--> crop x crop RGB8
//!       --* scale, - mean, / std, channel order, layout--> f32 tensor
//! ```
//!
//! - **Resize.** The output size is torchvision's: the shorter side becomes
//!   `resize`, the longer `floor(resize * long / short)`. The resampling is
//!   Pillow's (`ImagingResample` in `libImaging/Resample.c`, bilinear): a
//!   triangle filter widened by the scale factor when shrinking (the
//!   antialiasing), the horizontal pass first, 22-bit fixed-point
//!   coefficients and rounding to 8 bits after each pass. odin repeats that
//!   arithmetic, so its crop is byte for byte what Pillow gives for the same
//!   decoded pixels (tested against Pillow 13). Only the pixels inside the
//!   crop window are computed.
//! - **Centre crop** at torchvision's offset, `round((size - crop) / 2)` with
//!   Python's rounding (half to even).
//! - **Decoding.** PNG is lossless and decodes as Pillow decodes it. JPEG
//!   goes through zune-jpeg, not libjpeg, whose IDCT and chroma upsampling
//!   may differ from Pillow's by a level or two. Neither EXIF orientation
//!   nor ICC profiles are applied (Pillow applies neither by default), and
//!   alpha is dropped, as `convert("RGB")` drops it.
//! - **Bounds.** The declared size is read from the PNG `IHDR` or the JPEG
//!   frame header before decoding and refused above [`MAX_PIXELS`]; the
//!   decoder then runs under `image::Limits` ([`MAX_DECODED_BYTES`]) as a
//!   second line. A JPEG with no end-of-image marker after its scan data is
//!   refused as truncated: the decoder would pad it with grey, where Pillow
//!   raises "image file is truncated".
//!
//! Classification follows Triton's classification extension
//! (`docs/protocol/extension_classification.md`, and `src/classification.cc`
//! of triton-inference-server/server): the top K of one batch row as
//! `"<value>:<index>[:<label>]"`, the value printed as C++'s
//! `std::to_string(float)` prints it (`%f`, six decimals, `3.300000:1`).

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ::image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

/// Largest picture decoded, in pixels: 64 Mi (8192 x 8192).
pub const MAX_PIXELS: u64 = 1 << 26;

/// Largest buffer the decoder may allocate for the decoded picture, in
/// bytes: [`MAX_PIXELS`] of 8-bit RGBA, or half as many of 16-bit RGBA.
pub const MAX_DECODED_BYTES: u64 = 4 * MAX_PIXELS;

/// Largest `resize` or `crop`, in pixels.
pub const MAX_SIZE: u32 = 8192;

/// Largest labels file read, in bytes.
const MAX_LABELS_BYTES: u64 = 16 << 20;

/// Why a picture could not become a tensor, or a labels file could not be
/// read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The labels file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The labels file is too large or not UTF-8 text.
    #[error("{}: {reason}", path.display())]
    Labels {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `model.preprocess` value is out of range or inconsistent.
    #[error("{field}: {reason}")]
    Config {
        /// Dotted path of the field, e.g. `model.preprocess.crop`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The bytes are not a JPEG or a PNG.
    #[error("not a JPEG (FF D8 FF) or PNG (89 50 4E 47 0D 0A 1A 0A): {0}")]
    Format(String),
    /// The picture declares more pixels than odin decodes.
    #[error(
        "{format}: the picture is {width}x{height} pixels, more than the {} odin decodes; send it scaled down",
        MAX_PIXELS
    )]
    TooLarge {
        /// `JPEG` or `PNG`.
        format: &'static str,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The file is truncated or corrupt.
    #[error("{format}: {reason}")]
    Decode {
        /// `JPEG` or `PNG`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The model's input is not a picture of the configured size.
    #[error("model input {0}")]
    Shape(String),
}

/// Where the channel dimension sits in the model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, 3, H, W]` (PyTorch, ONNX exports of it).
    #[default]
    Nchw,
    /// `[1, H, W, 3]` (TensorFlow).
    Nhwc,
}

/// The order of the colour channels in the model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (torchvision).
    #[default]
    Rgb,
    /// Blue, green, red (Caffe, OpenCV).
    Bgr,
}

/// How a picture becomes the model's input: the YAML section
/// `model.preprocess`.
///
/// The defaults are torchvision's ImageNet recipe: `Resize(256)`,
/// `CenterCrop(224)`, `ToTensor()`, `Normalize(mean, std)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// The shorter side after resizing, in pixels (the aspect ratio is kept).
    pub resize: u32,
    /// The side of the square cut from the centre of the resized picture; it
    /// must equal the model's input height and width.
    pub crop: u32,
    /// Subtracted per channel after scaling, in the model's channel order
    /// (with `channels: bgr`, `mean[0]` is blue's).
    pub mean: [f32; 3],
    /// Divides per channel after the mean is subtracted, in the model's
    /// channel order.
    pub std: [f32; 3],
    /// Multiplies the 8-bit pixel values before `mean` and `std` (1/255 maps
    /// them to [0, 1], as `ToTensor` does).
    pub scale: f32,
    /// Where the channel dimension sits.
    pub layout: Layout,
    /// The order of the colour channels.
    pub channels: ChannelOrder,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            scale: 1.0 / 255.0,
            layout: Layout::Nchw,
            channels: ChannelOrder::Rgb,
        }
    }
}

impl PreprocessConfig {
    /// torchvision's recipe laid out as the model input `dims` is: NHWC
    /// when dimension 3 is the 3 channels and dimension 1 is not, else NCHW.
    pub fn for_input(dims: [usize; 4]) -> Self {
        let layout = if dims[3] == 3 && dims[1] != 3 {
            Layout::Nhwc
        } else {
            Layout::Nchw
        };
        PreprocessConfig {
            layout,
            ..PreprocessConfig::default()
        }
    }

    /// Checks the values; the error names the field
    /// (`model.preprocess.crop`, `model.preprocess.std[1]`, ...).
    pub fn validate(&self) -> Result<(), ImageError> {
        let err = |field: &str, reason: String| {
            Err(ImageError::Config {
                field: format!("model.preprocess.{field}"),
                reason,
            })
        };
        for (field, v) in [("resize", self.resize), ("crop", self.crop)] {
            if v == 0 || v > MAX_SIZE {
                return err(
                    field,
                    format!("{v}: must be between 1 and {MAX_SIZE} pixels"),
                );
            }
        }
        if self.crop > self.resize {
            return err(
                "crop",
                format!(
                    "{} is larger than resize ({}): the crop is cut from the resized picture, whose shorter side is resize",
                    self.crop, self.resize
                ),
            );
        }
        for (i, m) in self.mean.iter().enumerate() {
            if !m.is_finite() {
                return err(
                    &format!("mean[{i}]"),
                    format!("{m}: must be a finite number"),
                );
            }
        }
        for (i, s) in self.std.iter().enumerate() {
            if !s.is_finite() || *s == 0.0 {
                return err(
                    &format!("std[{i}]"),
                    format!("{s}: must be a finite number other than 0"),
                );
            }
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return err(
                "scale",
                format!(
                    "{}: must be a positive finite number (1/255 maps 8-bit pixels to [0, 1])",
                    self.scale
                ),
            );
        }
        Ok(())
    }
}

/// Turns an encoded JPEG or PNG into the model input `want`: `[1, 3, H, W]`
/// for [`Layout::Nchw`] or `[1, H, W, 3]` for [`Layout::Nhwc`], with H and W
/// equal to `cfg.crop`. The values are in C order.
pub fn preprocess(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    want: [usize; 4],
) -> Result<Vec<f32>, ImageError> {
    cfg.validate()?;
    check_shape(cfg, want)?;
    let px = decode(bytes)?;
    let rgb = resize_crop(&px, cfg.resize, cfg.crop);
    Ok(normalise(&rgb, cfg))
}

/// Checks that `want` is a batch-1 picture of `cfg.crop` pixels square in
/// `cfg.layout`.
fn check_shape(cfg: &PreprocessConfig, want: [usize; 4]) -> Result<(), ImageError> {
    let dims = crate::engine::onnx::data::fmt_dims(&want);
    let (layout, c, h, w) = match cfg.layout {
        Layout::Nchw => ("nchw", want[1], want[2], want[3]),
        Layout::Nhwc => ("nhwc", want[3], want[1], want[2]),
    };
    if want[0] != 1 {
        return Err(ImageError::Shape(format!(
            "{dims}: a picture fills a batch of 1, dimension 0 must be 1"
        )));
    }
    if c != 3 {
        let (at, other) = match cfg.layout {
            Layout::Nchw => (1, "nhwc"),
            Layout::Nhwc => (3, "nchw"),
        };
        return Err(ImageError::Shape(format!(
            "{dims}: model.preprocess.layout is {layout}, so dimension {at} is the channels, \
             and it is {c}, not 3 (is the model {other}?)"
        )));
    }
    let crop = cfg.crop as usize;
    if h != crop || w != crop {
        return Err(ImageError::Shape(format!(
            "{dims}: the model takes {h}x{w} pixels but model.preprocess.crop is {crop}; \
             set crop to the model's size (and resize at least as large)"
        )));
    }
    Ok(())
}

/// A decoded picture, 8 bits a channel, row-major.
struct Pixels {
    data: Vec<u8>,
    width: usize,
    height: usize,
    /// Bytes per pixel.
    bpp: usize,
    /// Offsets of red, green and blue within a pixel (all 0 for grey).
    rgb: [usize; 3],
}

/// The two formats odin decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
        }
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Decodes `bytes` after checking the format and the declared size.
#[allow(
    clippy::cast_possible_truncation,
    reason = "MAX_PIXELS is below u32::MAX"
)]
fn decode(bytes: &[u8]) -> Result<Pixels, ImageError> {
    let (format, width, height) = sniff(bytes)?;
    let fail = |reason: String| ImageError::Decode {
        format: format.name(),
        reason,
    };
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(fail(format!("the header declares {width}x{height} pixels")));
    }
    if pixels > MAX_PIXELS {
        return Err(ImageError::TooLarge {
            format: format.name(),
            width,
            height,
        });
    }
    let mut limits = Limits::default();
    // A side can be at most MAX_PIXELS long when the other is one pixel; the
    // pixel count was checked above, these are the decoder's own guards.
    limits.max_image_width = Some(MAX_PIXELS as u32);
    limits.max_image_height = Some(MAX_PIXELS as u32);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = ImageReader::with_format(
        Cursor::new(bytes),
        match format {
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Png => ImageFormat::Png,
        },
    );
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if (w, h) != (width, height) {
        return Err(fail(format!(
            "the header declares {width}x{height} pixels, the decoder reads {w}x{h}"
        )));
    }
    let need = decoder.total_bytes();
    if need > MAX_DECODED_BYTES {
        return Err(fail(format!(
            "{w}x{h} pixels of {:?} need {need} bytes decoded, more than the {MAX_DECODED_BYTES} odin allows",
            decoder.color_type()
        )));
    }
    // A decoder bug on hostile input costs this request, not the thread.
    let img = catch_unwind(AssertUnwindSafe(|| DynamicImage::from_decoder(decoder)))
        .map_err(|_| fail("the decoder failed on this file".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (data, bpp, rgb) = match img {
        DynamicImage::ImageRgb8(b) => (b.into_raw(), 3, [0, 1, 2]),
        DynamicImage::ImageRgba8(b) => (b.into_raw(), 4, [0, 1, 2]),
        DynamicImage::ImageLuma8(b) => (b.into_raw(), 1, [0, 0, 0]),
        DynamicImage::ImageLumaA8(b) => (b.into_raw(), 2, [0, 0, 0]),
        other => (other.into_rgb8().into_raw(), 3, [0, 1, 2]),
    };
    if data.len() != width * height * bpp {
        return Err(fail(format!(
            "the decoder returned {} bytes for {width}x{height} pixels",
            data.len()
        )));
    }
    Ok(Pixels {
        data,
        width,
        height,
        bpp,
        rgb,
    })
}

/// The format and the declared width and height, read from the PNG `IHDR` or
/// the JPEG frame header without decoding anything.
fn sniff(bytes: &[u8]) -> Result<(Format, u32, u32), ImageError> {
    if bytes.starts_with(PNG_SIGNATURE) {
        let fail = |reason: String| ImageError::Decode {
            format: "PNG",
            reason,
        };
        if bytes.len() < 24 {
            return Err(fail(format!(
                "truncated: {} bytes, the header (IHDR) ends at byte 24",
                bytes.len()
            )));
        }
        if &bytes[12..16] != b"IHDR" {
            return Err(fail("the first chunk (at byte 8) is not IHDR".into()));
        }
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        return Ok((Format::Png, be(16), be(20)));
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let (w, h) = jpeg_header(bytes).map_err(|reason| ImageError::Decode {
            format: "JPEG",
            reason,
        })?;
        return Ok((Format::Jpeg, w, h));
    }
    Err(ImageError::Format(describe(bytes)))
}

/// Walks the JPEG marker segments up to the first scan: the frame header's
/// width and height, once it is known that an end-of-image marker follows
/// the scan data.
fn jpeg_header(b: &[u8]) -> Result<(u32, u32), String> {
    let n = b.len();
    let mut p = 2;
    let mut dims = None;
    loop {
        // Bytes between segments are skipped, as libjpeg skips them (with a
        // warning); so are fill bytes (FF FF ...).
        while p < n && b[p] != 0xFF {
            p += 1;
        }
        while p < n && b[p] == 0xFF {
            p += 1;
        }
        if p >= n {
            return Err(format!(
                "truncated: the headers end at byte {n} before any scan (no SOS marker)"
            ));
        }
        let marker = b[p];
        let at = p - 1;
        p += 1;
        match marker {
            // Standalone markers: TEM, RSTn, a repeated SOI, a stray FF 00.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            0xD9 => {
                return Err(format!(
                    "an end-of-image marker at byte {at} before any scan (no image data)"
                ));
            }
            _ => {}
        }
        if p + 2 > n {
            return Err(format!(
                "truncated: the segment of marker FF {marker:02X} at byte {at} has no length"
            ));
        }
        let len = usize::from(u16::from_be_bytes([b[p], b[p + 1]]));
        if len < 2 {
            return Err(format!(
                "the segment of marker FF {marker:02X} at byte {at} declares length {len}"
            ));
        }
        let end = p + len;
        if end > n {
            return Err(format!(
                "truncated: the segment of marker FF {marker:02X} at byte {at} declares {len} bytes, {} are left",
                n - p
            ));
        }
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if len < 7 {
                return Err(format!(
                    "the frame header (FF {marker:02X}) at byte {at} is {len} bytes, too short"
                ));
            }
            let h = u16::from_be_bytes([b[p + 3], b[p + 4]]);
            let w = u16::from_be_bytes([b[p + 5], b[p + 6]]);
            dims = Some((u32::from(w), u32::from(h)));
        }
        if marker == 0xDA {
            let dims = dims.ok_or_else(|| {
                format!("a scan (SOS) at byte {at} before any frame header (SOF)")
            })?;
            // Entropy-coded data stuffs every FF data byte as FF 00, so FF D9
            // after the scan header is the end-of-image marker.
            if !b[end..].windows(2).any(|w| w == [0xFF, 0xD9]) {
                return Err(format!(
                    "truncated: no end-of-image marker (FF D9) after the scan data that starts at byte {end}"
                ));
            }
            return Ok(dims);
        }
        p = end;
    }
}

/// What the first bytes of something that is not a JPEG or PNG look like.
fn describe(b: &[u8]) -> String {
    if b.is_empty() {
        return "the input is empty".into();
    }
    let what = if b.starts_with(b"GIF8") {
        "a GIF"
    } else if b.starts_with(b"BM") {
        "a BMP"
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        "a WebP"
    } else if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        "a TIFF"
    } else if b.len() >= 12 && &b[4..8] == b"ftyp" {
        "an ISO media file (HEIC, AVIF or video)"
    } else if b.starts_with(b"\x93NUMPY") {
        "a .npy array (send it as a tensor, not as BYTES)"
    } else if b.starts_with(b"/9j/") {
        "base64 text of a JPEG (send the decoded bytes)"
    } else if b.starts_with(b"iVBORw0KGgo") {
        "base64 text of a PNG (send the decoded bytes)"
    } else if b.starts_with(b"data:") {
        "a data: URL (send the decoded bytes)"
    } else if b.starts_with(b"%PDF") {
        "a PDF"
    } else if b.starts_with(b"\x89PNG") {
        "a damaged PNG signature"
    } else if b.starts_with(&[0xFF, 0xD8]) {
        "a JPEG start-of-image marker with no marker after it"
    } else if matches!(
        b.iter().find(|c| !c.is_ascii_whitespace()),
        Some(b'{' | b'[')
    ) {
        "JSON text"
    } else {
        ""
    };
    let n = b.len().min(8);
    let hex: Vec<String> = b[..n].iter().map(|x| format!("{x:02X}")).collect();
    let text: String = b[..n]
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    let mut s = format!("the first bytes are {} ({text:?})", hex.join(" "));
    if !what.is_empty() {
        s += ", which look like ";
        s += what;
    }
    s
}

/// The size torchvision's `Resize(resize)` gives a `width` x `height`
/// picture: the shorter side becomes `resize`, the longer
/// `int(resize * long / short)`. Integer division gives the same floor as
/// Python's float division while `resize * long < 2^53` (here below 2^39):
/// the correctly rounded quotient cannot reach the next integer.
fn resized_size(width: u64, height: u64, resize: u64) -> (u64, u64) {
    if width <= height {
        (resize, resize * height / width)
    } else {
        (resize * width / height, resize)
    }
}

/// torchvision's `CenterCrop` offset, `int(round((size - crop) / 2.0))`:
/// Python rounds halves to even.
fn crop_offset(size: u64, crop: u64) -> u64 {
    let d = size - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Fractional bits of Pillow's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bilinear filter along one axis, for a run of outputs.
struct Taps {
    /// Per output: first input pixel, number of taps, offset in `coeffs`.
    spans: Vec<(usize, usize, usize)>,
    /// Fixed-point weights, `PRECISION_BITS` fractional bits.
    coeffs: Vec<i32>,
}

/// Pillow's triangle filter (support 1).
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// The taps for outputs `first..first + count` of a resize from `inp` to
/// `out` pixels: Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`
/// (`libImaging/Resample.c`), computed the same way so the rounding agrees.
#[allow(
    clippy::cast_possible_truncation,
    reason = "truncation toward zero is the resampling rule (Pillow C)"
)]
fn taps(inp: usize, out: u64, first: u64, count: usize) -> Taps {
    let scale = inp as f64 / out as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ss = 1.0 / filterscale;
    let mut spans = Vec::with_capacity(count);
    let mut coeffs = Vec::new();
    let mut w = Vec::new();
    for xx in first..first + count as u64 {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) truncates; a negative start is clamped to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).clamp(0, inp as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        w.clear();
        let mut ww = 0.0;
        for x in 0..n {
            let v = triangle(((x + xmin) as f64 - center + 0.5) * ss);
            w.push(v);
            ww += v;
        }
        spans.push((xmin, n, coeffs.len()));
        for &v in &w {
            let k = if ww != 0.0 { v / ww } else { v };
            let s = k * f64::from(1u32 << PRECISION_BITS);
            coeffs.push(if k < 0.0 {
                (s - 0.5) as i32
            } else {
                (s + 0.5) as i32
            });
        }
    }
    Taps { spans, coeffs }
}

/// Rounds a fixed-point sum (which started at one half) to 8 bits.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Half of one in fixed point: the sums start there so `clip8` rounds.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The `crop` x `crop` window at the centre of the picture resized per
/// torchvision's `Resize(resize)`, RGB8, row-major: what Pillow's
/// `resize((w, h), BILINEAR).crop(box)` gives.
///
/// (The `image` crate's own triangle resize, vertical pass first in `f32`,
/// differs from Pillow by one level in about a fifth of the values.)
///
/// The sums stay below 2^31: the weights of one output add up to 2^22 plus
/// at most half a unit per tap, there are at most `2 * scale + 3` taps, and
/// the scale is at most the shorter side (8192, as the picture has at most
/// 2^26 pixels), so 255 times the sum is below 2^31.
fn resize_crop(px: &Pixels, resize: u32, crop: u32) -> Vec<u8> {
    let (w, h, bpp) = (px.width, px.height, px.bpp);
    let (nw, nh) = resized_size(w as u64, h as u64, u64::from(resize));
    let c = crop as usize;
    let hor = taps(w, nw, crop_offset(nw, u64::from(crop)), c);
    let ver = taps(h, nh, crop_offset(nh, u64::from(crop)), c);
    // The rows the vertical pass reads (Pillow's ybox_first..ybox_last).
    let y0 = ver.spans.iter().map(|s| s.0).min().unwrap_or(0);
    let y1 = ver.spans.iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    let stride = c * 3;

    // Horizontal pass, first as in Pillow, rounded to 8 bits.
    let mut tmp = vec![0u8; (y1 - y0) * stride];
    for (y, out) in (y0..y1).zip(tmp.chunks_exact_mut(stride)) {
        let row = &px.data[y * w * bpp..(y + 1) * w * bpp];
        for (&(x0, n, k0), o) in hor.spans.iter().zip(out.chunks_exact_mut(3)) {
            let mut acc = [HALF; 3];
            for (j, &k) in hor.coeffs[k0..k0 + n].iter().enumerate() {
                let p = &row[(x0 + j) * bpp..(x0 + j + 1) * bpp];
                for (a, &off) in acc.iter_mut().zip(&px.rgb) {
                    *a += i32::from(p[off]) * k;
                }
            }
            for (o, a) in o.iter_mut().zip(acc) {
                *o = clip8(a);
            }
        }
    }

    // Vertical pass, rounded to 8 bits.
    let mut dst = vec![0u8; c * stride];
    let mut acc = vec![HALF; stride];
    for (&(ys, n, k0), out) in ver.spans.iter().zip(dst.chunks_exact_mut(stride)) {
        acc.fill(HALF);
        for (t, &k) in ver.coeffs[k0..k0 + n].iter().enumerate() {
            let row = &tmp[(ys - y0 + t) * stride..][..stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += i32::from(v) * k;
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    dst
}

/// Scales, normalises, orders and lays out a square RGB8 crop.
fn normalise(rgb: &[u8], cfg: &PreprocessConfig) -> Vec<f32> {
    // Model channel i takes picture channel order[i].
    let order = match cfg.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let mut lut = [[0f32; 256]; 3];
    for (i, table) in lut.iter_mut().enumerate() {
        for (v, e) in table.iter_mut().enumerate() {
            *e = (v as f32 * cfg.scale - cfg.mean[i]) / cfg.std[i];
        }
    }
    let plane = rgb.len() / 3;
    let mut out = vec![0f32; plane * 3];
    for (p, px) in rgb.chunks_exact(3).enumerate() {
        for i in 0..3 {
            let v = lut[i][usize::from(px[order[i]])];
            match cfg.layout {
                Layout::Nchw => out[i * plane + p] = v,
                Layout::Nhwc => out[p * 3 + i] = v,
            }
        }
    }
    out
}

/// Class labels: line i of a text file names class i (`model.labels`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    labels: Vec<String>,
}

impl Labels {
    /// Reads a labels file: UTF-8, one label a line, a trailing newline or
    /// not, `\r\n` or `\n`. An empty line is a class without a label; it
    /// keeps its index.
    pub fn load(path: &Path) -> Result<Labels, ImageError> {
        let io = |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_LABELS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let fail = |reason: String| ImageError::Labels {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() as u64 > MAX_LABELS_BYTES {
            return Err(fail(format!(
                "larger than the {MAX_LABELS_BYTES} bytes odin reads for labels"
            )));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&c| c == b'\n')
                .count();
            fail(format!("line {line} is not UTF-8 text"))
        })?;
        Ok(Labels::parse(text))
    }

    /// Labels from text, one a line, as [`Labels::load`] reads them.
    pub fn parse(text: &str) -> Labels {
        if text.is_empty() {
            return Labels::default();
        }
        let text = text.strip_suffix('\n').unwrap_or(text);
        let labels = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
            .collect();
        Labels { labels }
    }

    /// The label of class `i`: `None` past the end of the file, `Some("")`
    /// for an empty line.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.labels.get(i).map(String::as_str)
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the file had no lines.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The top `k` of one batch row of `scores` as Triton's classification
/// strings, `"<value>:<index>[:<label>]"`, best first.
///
/// The value is printed as `std::to_string(float)` prints it (`%f`:
/// `3.300000`, `-0.000000`, `inf`, `nan`); the label is left out when there is
/// none or it is empty, as Triton leaves it out. Ties go to the lower index,
/// NaN comes last, and a `k` beyond the row gives the whole row.
pub fn classify(scores: &[f32], k: usize, labels: Option<&Labels>) -> Vec<String> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let rank = |&a: &usize, &b: &usize| {
        let (x, y) = (scores[a], scores[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => y
                .partial_cmp(&x)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b)),
        }
    };
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, rank);
        idx.truncate(k);
    }
    idx.sort_unstable_by(rank);
    idx.into_iter()
        .map(|i| {
            let mut s = format!("{}:{i}", fmt_score(scores[i]));
            if let Some(l) = labels.and_then(|l| l.get(i)).filter(|l| !l.is_empty()) {
                s.push(':');
                s.push_str(l);
            }
            s
        })
        .collect()
}

/// `printf("%f", v)`, as C++'s `std::to_string(float)`: both print the exact
/// binary value rounded half to even to six decimals; only NaN is spelled
/// differently.
fn fmt_score(v: f32) -> String {
    if v.is_nan() {
        if v.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::codecs::jpeg::JpegEncoder;
    use ::image::{GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
    use proptest::prelude::*;

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut Cursor::new(&mut v), ImageFormat::Png)
            .unwrap();
        v
    }

    fn jpeg(img: &DynamicImage, quality: u8) -> Vec<u8> {
        let mut v = Vec::new();
        JpegEncoder::new_with_quality(&mut v, quality)
            .encode_image(img)
            .unwrap();
        v
    }

    fn cfg(resize: u32, crop: u32) -> PreprocessConfig {
        PreprocessConfig {
            resize,
            crop,
            ..PreprocessConfig::default()
        }
    }

    fn nchw(crop: u32) -> [usize; 4] {
        [1, 3, crop as usize, crop as usize]
    }

    fn nhwc(crop: u32) -> [usize; 4] {
        [1, crop as usize, crop as usize, 3]
    }

    /// The pattern also drawn by the Pillow script in `resize_matches_pillow`.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                ((x * 37 + y * 11) % 256) as u8,
                ((x * y * 5) % 256) as u8,
                (((x ^ y) * 13) % 256) as u8,
            ])
        })
    }

    fn expect(c: u8, ch: usize, cfg: &PreprocessConfig) -> f32 {
        (f32::from(c) * cfg.scale - cfg.mean[ch]) / cfg.std[ch]
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(data);
        let mut crc_in = kind.to_vec();
        crc_in.extend_from_slice(data);
        v.extend_from_slice(&crc32(&crc_in).to_be_bytes());
        v
    }

    /// A PNG whose header claims `w` x `h` RGB pixels, with no image data.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut v = PNG_SIGNATURE.to_vec();
        v.extend(png_chunk(b"IHDR", &ihdr));
        v.extend(png_chunk(b"IEND", &[]));
        v
    }

    #[test]
    fn defaults_are_torchvision_imagenet() {
        let c = PreprocessConfig::default();
        assert_eq!((c.resize, c.crop), (256, 224));
        assert_eq!(c.mean, [0.485, 0.456, 0.406]);
        assert_eq!(c.std, [0.229, 0.224, 0.225]);
        assert_eq!(c.scale, 1.0 / 255.0);
        assert_eq!((c.layout, c.channels), (Layout::Nchw, ChannelOrder::Rgb));
        c.validate().unwrap();
    }

    #[test]
    fn yaml_fills_defaults_and_refuses_unknown_fields() {
        let c: PreprocessConfig =
            yaml_serde::from_str("resize: 342\ncrop: 299\nlayout: nhwc\nchannels: bgr\n").unwrap();
        assert_eq!((c.resize, c.crop), (342, 299));
        assert_eq!((c.layout, c.channels), (Layout::Nhwc, ChannelOrder::Bgr));
        assert_eq!(c.mean, PreprocessConfig::default().mean);
        let e = yaml_serde::from_str::<PreprocessConfig>("crops: 3\n").unwrap_err();
        assert!(e.to_string().contains("crops"), "{e}");
        assert!(yaml_serde::from_str::<PreprocessConfig>("layout: chw\n").is_err());
        // Round trip through YAML.
        let text = yaml_serde::to_string(&c).unwrap();
        assert_eq!(yaml_serde::from_str::<PreprocessConfig>(&text).unwrap(), c);
    }

    #[test]
    fn validate_names_the_field() {
        let cases: Vec<(PreprocessConfig, &str)> = vec![
            (cfg(0, 0), "model.preprocess.resize"),
            (cfg(256, 0), "model.preprocess.crop"),
            (cfg(MAX_SIZE + 1, 224), "model.preprocess.resize"),
            (cfg(224, 256), "model.preprocess.crop"),
            (
                PreprocessConfig {
                    std: [0.2, 0.0, 0.2],
                    ..Default::default()
                },
                "model.preprocess.std[1]",
            ),
            (
                PreprocessConfig {
                    std: [0.2, 0.2, f32::INFINITY],
                    ..Default::default()
                },
                "model.preprocess.std[2]",
            ),
            (
                PreprocessConfig {
                    mean: [f32::NAN, 0.0, 0.0],
                    ..Default::default()
                },
                "model.preprocess.mean[0]",
            ),
            (
                PreprocessConfig {
                    scale: 0.0,
                    ..Default::default()
                },
                "model.preprocess.scale",
            ),
            (
                PreprocessConfig {
                    scale: f32::NAN,
                    ..Default::default()
                },
                "model.preprocess.scale",
            ),
        ];
        for (c, field) in cases {
            match c.validate() {
                Err(ImageError::Config { field: f, .. }) => assert_eq!(f, field, "{c:?}"),
                other => panic!("{c:?}: {other:?}"),
            }
        }
        // And preprocess refuses an invalid configuration rather than panic.
        let bytes = png(&DynamicImage::ImageRgb8(pattern(8, 8)));
        let e = preprocess(&bytes, &cfg(4, 8), nchw(8)).unwrap_err();
        assert!(e.to_string().contains("model.preprocess.crop"), "{e}");
    }

    #[test]
    fn output_size_and_crop_offset_follow_torchvision() {
        // int(256 * 500 / 375) = 341.
        assert_eq!(resized_size(500, 375, 256), (341, 256));
        assert_eq!(resized_size(375, 500, 256), (256, 341));
        assert_eq!(resized_size(300, 300, 256), (256, 256));
        // int(16 * 37 / 29) = int(20.41) = 20; int(48 * 37 / 29) = 61.
        assert_eq!(resized_size(37, 29, 16), (20, 16));
        assert_eq!(resized_size(37, 29, 48), (61, 48));
        // Exactly divisible: no rounding down below the true value.
        assert_eq!(resized_size(640, 480, 240), (320, 240));
        // round() halves to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4.
        let offsets: Vec<u64> = (0..8).map(|d| crop_offset(10 + d, 10)).collect();
        assert_eq!(offsets, [0, 0, 1, 2, 2, 2, 3, 4]);
        assert_eq!(crop_offset(256, 224), 16);
    }

    #[test]
    fn solid_png_is_exact_everywhere() {
        let colour = [200u8, 30, 117];
        for (w, h, resize, crop) in [(64, 48, 32, 24), (10, 13, 32, 24), (300, 100, 20, 20)] {
            let img = RgbImage::from_pixel(w, h, Rgb(colour));
            let bytes = png(&DynamicImage::ImageRgb8(img));
            let c = cfg(resize, crop);
            let out = preprocess(&bytes, &c, nchw(crop)).unwrap();
            let plane = (crop * crop) as usize;
            assert_eq!(out.len(), 3 * plane);
            for ch in 0..3 {
                let want = expect(colour[ch], ch, &c);
                assert!(
                    out[ch * plane..(ch + 1) * plane].iter().all(|&v| v == want),
                    "{w}x{h} channel {ch}"
                );
            }
        }
    }

    #[test]
    fn grey_and_rgba_read_as_their_rgb() {
        let (w, h) = (23u32, 17u32);
        let c = cfg(12, 10);
        let grey = GrayImage::from_fn(w, h, |x, y| ::image::Luma([(x * 11 + y * 7) as u8]));
        let as_rgb = RgbImage::from_fn(w, h, |x, y| {
            let v = grey.get_pixel(x, y).0[0];
            Rgb([v, v, v])
        });
        let a = preprocess(&png(&DynamicImage::ImageLuma8(grey)), &c, nchw(10)).unwrap();
        let b = preprocess(&png(&DynamicImage::ImageRgb8(as_rgb)), &c, nchw(10)).unwrap();
        assert_eq!(a, b);

        let rgb = pattern(w, h);
        let rgba = RgbaImage::from_fn(w, h, |x, y| {
            let p = rgb.get_pixel(x, y).0;
            Rgba([p[0], p[1], p[2], (x * 9 + y) as u8])
        });
        let a = preprocess(&png(&DynamicImage::ImageRgba8(rgba)), &c, nchw(10)).unwrap();
        let b = preprocess(&png(&DynamicImage::ImageRgb8(rgb.clone())), &c, nchw(10)).unwrap();
        assert_eq!(a, b, "alpha is dropped, as convert(\"RGB\") drops it");

        // Grey with alpha, and 16-bit RGB (converted to 8 bits).
        let la = ::image::GrayAlphaImage::from_pixel(w, h, ::image::LumaA([90, 10]));
        let out = preprocess(&png(&DynamicImage::ImageLumaA8(la)), &c, nchw(10)).unwrap();
        assert!(out[..100].iter().all(|&v| v == expect(90, 0, &c)));
        let rgb16 =
            ::image::ImageBuffer::<Rgb<u16>, _>::from_pixel(w, h, Rgb([257 * 40, 0, 65535]));
        let out = preprocess(&png(&DynamicImage::ImageRgb16(rgb16)), &c, nchw(10)).unwrap();
        assert_eq!(
            (out[0], out[100], out[200]),
            (expect(40, 0, &c), expect(0, 1, &c), expect(255, 2, &c))
        );
    }

    #[test]
    fn nhwc_is_nchw_transposed() {
        let bytes = png(&DynamicImage::ImageRgb8(pattern(40, 31)));
        let c = cfg(20, 16);
        let a = preprocess(&bytes, &c, nchw(16)).unwrap();
        let b = preprocess(
            &bytes,
            &PreprocessConfig {
                layout: Layout::Nhwc,
                ..c.clone()
            },
            nhwc(16),
        )
        .unwrap();
        let plane = 16 * 16;
        for p in 0..plane {
            for ch in 0..3 {
                assert_eq!(b[p * 3 + ch], a[ch * plane + p]);
            }
        }
        // The picture is not uniform, so the comparison saw different values.
        assert!(a[..plane].iter().any(|&v| v != a[0]));
    }

    #[test]
    fn bgr_reverses_channels_and_takes_mean_in_model_order() {
        let bytes = png(&DynamicImage::ImageRgb8(pattern(40, 31)));
        let same = PreprocessConfig {
            mean: [0.5; 3],
            std: [0.25; 3],
            ..cfg(20, 16)
        };
        let bgr = PreprocessConfig {
            channels: ChannelOrder::Bgr,
            ..same.clone()
        };
        let a = preprocess(&bytes, &same, nchw(16)).unwrap();
        let b = preprocess(&bytes, &bgr, nchw(16)).unwrap();
        let plane = 16 * 16;
        for ch in 0..3 {
            assert_eq!(
                b[ch * plane..(ch + 1) * plane],
                a[(2 - ch) * plane..(3 - ch) * plane]
            );
        }
        // mean[0] and std[0] apply to the model's channel 0, blue.
        let solid = png(&DynamicImage::ImageRgb8(RgbImage::from_pixel(
            8,
            8,
            Rgb([10, 20, 30]),
        )));
        let c = PreprocessConfig {
            channels: ChannelOrder::Bgr,
            ..cfg(8, 8)
        };
        let out = preprocess(&solid, &c, nchw(8)).unwrap();
        assert_eq!(out[0], expect(30, 0, &c));
        assert_eq!(out[64], expect(20, 1, &c));
        assert_eq!(out[128], expect(10, 2, &c));
    }

    #[test]
    fn centre_crop_takes_the_centre() {
        // 16x21 with resize 16 keeps the size (int(16 * 21 / 16) = 21), so
        // the resize is the identity; the crop of 8 starts at x = 4 and at
        // y = round(6.5) = 6 (half to even).
        let mut img = RgbImage::from_pixel(16, 21, Rgb([0, 0, 0]));
        img.put_pixel(4, 6, Rgb([255, 0, 0]));
        img.put_pixel(11, 13, Rgb([0, 255, 0]));
        img.put_pixel(3, 6, Rgb([0, 0, 255]));
        img.put_pixel(4, 5, Rgb([0, 0, 255]));
        img.put_pixel(12, 13, Rgb([0, 0, 255]));
        let c = cfg(16, 8);
        let out = preprocess(&png(&DynamicImage::ImageRgb8(img)), &c, nchw(8)).unwrap();
        let at = |ch: usize, y: usize, x: usize| out[ch * 64 + y * 8 + x];
        assert_eq!(at(0, 0, 0), expect(255, 0, &c));
        assert_eq!(at(1, 7, 7), expect(255, 1, &c));
        // Nothing else is lit: the blue marks sit just outside the window.
        let lit = (0..3)
            .flat_map(|ch| (0..64).map(move |p| (ch, p)))
            .filter(|&(ch, p)| out[ch * 64 + p] != expect(0, ch, &c))
            .count();
        assert_eq!(lit, 2);
    }

    /// The crops below are Pillow 13.0.0's, made by (torchvision's size and
    /// crop rules, as in `transforms.functional`):
    ///
    /// ```python
    /// from PIL import Image
    /// im = Image.new("RGB", (37, 29))
    /// im.putdata([((x*37 + y*11) % 256, (x*y*5) % 256, ((x ^ y)*13) % 256)
    ///             for y in range(29) for x in range(37)])
    /// def tv(im, resize, crop):
    ///     w, h = im.size
    ///     short, long = (w, h) if w <= h else (h, w)
    ///     ns, nl = resize, int(resize * long / short)
    ///     nw, nh = (ns, nl) if w <= h else (nl, ns)
    ///     r = im.resize((nw, nh), Image.BILINEAR)
    ///     top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    ///     return r.crop((left, top, left + crop, top + crop)).tobytes().hex()
    /// print(tv(im, 16, 12)); print(tv(im, 48, 12))
    /// ```
    ///
    /// odin's crops equal them byte for byte: the maximum difference is 0
    /// levels, shrinking (29 -> 16) and enlarging (29 -> 48).
    #[test]
    fn resize_matches_pillow() {
        let img = pattern(37, 29);
        let px = Pixels {
            data: img.into_raw(),
            width: 37,
            height: 29,
            bpp: 3,
            rgb: [0, 1, 2],
        };
        for (resize, want) in [(16, PILLOW_16_12), (48, PILLOW_48_12)] {
            let want: Vec<u8> = (0..want.len() / 2)
                .map(|i| u8::from_str_radix(&want[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let got = resize_crop(&px, resize, 12);
            assert_eq!(got.len(), want.len());
            let diff = got
                .iter()
                .zip(&want)
                .map(|(&a, &b)| a.abs_diff(b))
                .max()
                .unwrap();
            assert_eq!(diff, 0, "resize {resize}: {got:02x?}");
        }
    }

    const PILLOW_16_12: &str = concat!(
        "519e7893b9a5ba9f953e5a875e6c74a38243b07d633478ae7288b0b5a077935f763c7059",
        "65ac81a865aeba5c954c877c739658b8a21a697b424577e2876dd2b9938e576779518a59",
        "79565bbc7653819c5844735c876550cc8f35579a51577aa49b64acb788b8436eb5659547",
        "8c7544bcae145f772e5672479a9649be8f4b4986576a817eae748e8081d83973d9788540",
        "a0a54db879263e7e2e6a6935ad6e42aa9e603971607e886ec18e718682964974948c666f",
        "b46d5675724940692c7e6b13bd7a3a5c817d4d8577927249b977484c771a5d7c26a07bb7",
        "c864557195474f6b39927a2cbf683d489f6c618f5ea67a4faf6f42446d35718231b483bb",
        "bc8e394d884d639b65a67e7b96905c318f13759626ba97426f865342946e858780c785a2",
        "b09f493f834f777b67b88e7b9a9457439c1d89641ec9794675794655907e99697fb286a7",
        "657e8d48867a8a8464bf735252864f568a3c9c713cb97117448b33689194ac67aaa09186",
        "4f69a15a7c7e9e8a65b5704c467a486a894bb07838a26d19458c257c87a3bc67a88f578a",
        "2e80b96f7bccb382758973243a68407f996cc59878619a854e8b82917c3fc86e3f4b5f4c",
    );
    const PILLOW_48_12: &str = concat!(
        "88513b9f7138b5634ccc605ae2805794a14e0fc14125783e3c554e52758069728d7f638a",
        "8f2a34a64c30bc6f4ed39162e9b35e9bb95b16af572c6254433c5a595e7270807786a074",
        "965622ad7928c39d4fdac26cf0e572a2b1781d4b7f335d854a767a609a4f77be478ddb4c",
        "9c8120b3a721c98450ca7572949b735d8e7d23648c398a8d50957c666f4c7d7f3e93a03f",
        "a3a31fbabd19d05e51b92479344b7214737c2a9a8f40b38957a0776d3b52843a419a603c",
        "aa970ec15411d74b52c055833b7e861ba88131d178478e7b5e6173745b578b7750a19b53",
        "b07506c73409dd5a53c6858b41b08e21be8337ba704d7973645e6f7a895b919458a78d5a",
        "b73e08ce5d01e48954cdb69048e38a28b5813e56785474716b986a81c560989059ae3653",
        "be5a4bd5894ba06d496864483393482f91484574495ba34972b6498896499f7849b55f49",
        "c4858bdbb6925e543f0817031e49093579124baa1b61ca2278be298e6633a56e3abb9e40",
        "cbb18de2e38a6583400f4808257b053cae1052e12368a4207f7f24958638acab3bc2d838",
        "d2be85e9c0826c8f411679102cae0e43c21259c41a6f9018866f209c713db39643c9c541",
    );

    #[test]
    fn jpeg_decodes_close_to_its_pixels() {
        let colour = [180u8, 90, 40];
        let c = cfg(32, 24);
        let solid = DynamicImage::ImageRgb8(RgbImage::from_pixel(48, 40, Rgb(colour)));
        let out = preprocess(&jpeg(&solid, 95), &c, nchw(24)).unwrap();
        let plane = 24 * 24;
        for ch in 0..3 {
            let want = expect(colour[ch], ch, &c);
            let worst = out[ch * plane..(ch + 1) * plane]
                .iter()
                .map(|v| (v - want).abs())
                .fold(0.0, f32::max);
            // Two levels of 255, in normalised units.
            assert!(
                worst <= 2.0 / 255.0 / c.std[ch] + 1e-6,
                "channel {ch}: {worst}"
            );
        }
        // A gradient: the JPEG's crop is near the PNG's.
        let grad = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 50, |x, y| {
            Rgb([(x * 4) as u8, (y * 5) as u8, 128])
        }));
        let a = preprocess(&jpeg(&grad, 98), &c, nchw(24)).unwrap();
        let b = preprocess(&png(&grad), &c, nchw(24)).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 8.0 / 255.0 / 0.224, "{worst}");
        // Grey JPEG.
        let grey = DynamicImage::ImageLuma8(GrayImage::from_pixel(30, 20, ::image::Luma([77])));
        let out = preprocess(&jpeg(&grey, 95), &c, nchw(24)).unwrap();
        for ch in 0..3 {
            let v = out[ch * plane + 100];
            assert!((v - expect(77, ch, &c)).abs() <= 1.0 / 255.0 / c.std[ch] + 1e-6);
        }
    }

    #[test]
    fn wrong_shapes_are_named() {
        let bytes = png(&DynamicImage::ImageRgb8(pattern(8, 8)));
        let c = cfg(8, 8);
        for (want, needle) in [
            ([2, 3, 8, 8], "dimension 0 must be 1"),
            ([1, 8, 8, 3], "is the model nhwc?"),
            ([1, 3, 9, 8], "model.preprocess.crop is 8"),
            ([1, 3, 8, 16], "model.preprocess.crop is 8"),
        ] {
            let e = preprocess(&bytes, &c, want).unwrap_err();
            assert!(matches!(e, ImageError::Shape(_)), "{e}");
            assert!(e.to_string().contains(needle), "{want:?}: {e}");
        }
        let nhwc_cfg = PreprocessConfig {
            layout: Layout::Nhwc,
            ..c
        };
        let e = preprocess(&bytes, &nhwc_cfg, [1, 3, 8, 8]).unwrap_err();
        assert!(e.to_string().contains("is the model nchw?"), "{e}");
        assert_eq!(
            preprocess(&bytes, &nhwc_cfg, [1, 8, 8, 3]).unwrap().len(),
            192
        );
    }

    #[test]
    fn not_a_picture_says_what_it_looks_like() {
        for (bytes, needle) in [
            (&b""[..], "the input is empty"),
            (b"GIF89a\x01\x00\x01\x00", "a GIF"),
            (b"/9j/4AAQSkZJRgABAQ", "base64 text of a JPEG"),
            (b"iVBORw0KGgoAAAANSUhEUg", "base64 text of a PNG"),
            (b"  {\"inputs\": []}", "JSON text"),
            (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "a WebP"),
            (b"\x93NUMPY\x01\x00", "a .npy array"),
            (b"\x89PNG\r\n\x1a", "a damaged PNG signature"),
            (b"hello", "68 65 6C 6C 6F (\"hello\")"),
        ] {
            let e = preprocess(bytes, &cfg(8, 8), nchw(8)).unwrap_err();
            assert!(matches!(e, ImageError::Format(_)), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn oversized_declared_dimensions_are_refused() {
        let e = preprocess(&png_header(100_000, 100_000), &cfg(8, 8), nchw(8)).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::TooLarge {
                    width: 100_000,
                    height: 100_000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("100000x100000"), "{e}");
        // Just above the bound, in one long row.
        let e = preprocess(&png_header(1 << 26, 2), &cfg(8, 8), nchw(8)).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
        // A JPEG frame header of 65535x65535.
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xC0, 0, 11, 8, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0]);
        j.extend([0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 0, 0, 0xFF, 0xD9]);
        let e = preprocess(&j, &cfg(8, 8), nchw(8)).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::TooLarge {
                    format: "JPEG",
                    width: 65535,
                    height: 65535
                }
            ),
            "{e}"
        );
        // Zero pixels.
        let e = preprocess(&png_header(0, 5), &cfg(8, 8), nchw(8)).unwrap_err();
        assert!(e.to_string().contains("0x5"), "{e}");
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let img = DynamicImage::ImageRgb8(pattern(20, 16));
        let c = cfg(8, 8);
        let p = png(&img);
        let j = jpeg(&img, 90);
        preprocess(&p, &c, nchw(8)).unwrap();
        preprocess(&j, &c, nchw(8)).unwrap();
        // Every cut of the JPEG loses its end-of-image marker.
        for n in 3..j.len() {
            assert!(preprocess(&j[..n], &c, nchw(8)).is_err(), "JPEG cut at {n}");
        }
        // Every cut of the PNG before the image data ends.
        let iend = p.len() - 12;
        for n in 8..iend - 4 {
            assert!(preprocess(&p[..n], &c, nchw(8)).is_err(), "PNG cut at {n}");
        }
        let e = preprocess(&j[..j.len() - 10], &c, nchw(8)).unwrap_err();
        assert!(e.to_string().contains("end-of-image marker"), "{e}");
        // A flipped byte inside the PNG's image data fails its CRC.
        let mut bad = p.clone();
        bad[iend - 8] ^= 0x55;
        let e = preprocess(&bad, &c, nchw(8)).unwrap_err();
        assert!(matches!(e, ImageError::Decode { format: "PNG", .. }), "{e}");
        // A JPEG segment whose length runs past the end.
        let e = preprocess(&[0xFF, 0xD8, 0xFF, 0xE0, 0x40, 0x00, 1, 2], &c, nchw(8)).unwrap_err();
        assert!(e.to_string().contains("byte 2 declares 16384 bytes"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(
            kind in 0..3u8,
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = match kind {
                0 => PNG_SIGNATURE.to_vec(),
                1 => vec![0xFF, 0xD8, 0xFF],
                _ => Vec::new(),
            };
            bytes.extend(tail);
            let _ = preprocess(&bytes, &cfg(8, 8), nchw(8));
        }

        #[test]
        fn mutated_files_never_panic(
            which in 0..2u8,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let img = DynamicImage::ImageRgb8(pattern(24, 18));
            let mut bytes = if which == 0 { png(&img) } else { jpeg(&img, 80) };
            for (at, v) in edits {
                let n = bytes.len();
                bytes[at % n] = v;
            }
            let n = bytes.len();
            bytes.truncate(n - cut % (n / 4));
            let _ = preprocess(&bytes, &cfg(12, 10), nchw(10));
        }
    }

    #[test]
    fn labels_keep_line_indices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "tench\ngoldfish\n\ngreat white shark\r\n").unwrap();
        let l = Labels::load(&path).unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(l.get(0), Some("tench"));
        assert_eq!(l.get(2), Some(""));
        assert_eq!(l.get(3), Some("great white shark"));
        assert_eq!(l.get(4), None);
        // No trailing newline; a blank last line is a label.
        assert_eq!(Labels::parse("a\nb").len(), 2);
        assert_eq!(Labels::parse("a\nb\n\n").get(2), Some(""));
        assert!(Labels::parse("").is_empty());
        assert_eq!(Labels::parse("\n").get(0), Some(""));

        std::fs::write(&path, b"ok\nbad \xFF\n").unwrap();
        let e = Labels::load(&path).unwrap_err();
        assert!(e.to_string().contains("line 2 is not UTF-8"), "{e}");
        let missing = dir.path().join("none.txt");
        let e = Labels::load(&missing).unwrap_err();
        assert!(matches!(e, ImageError::Io { .. }));
        assert!(e.to_string().contains("none.txt"), "{e}");
    }

    #[test]
    fn classify_is_tritons_format() {
        // The example of Triton's classification extension document; the
        // value is printed with std::to_string, six decimals.
        let row = [1.1f32, 3.3, 0.5, 2.4];
        assert_eq!(classify(&row, 2, None), ["3.300000:1", "2.400000:3"]);
        let labels = Labels::parse("index_0_label\nindex_1_label\nindex_2_label\nindex_3_label\n");
        assert_eq!(
            classify(&row, 2, Some(&labels)),
            ["3.300000:1:index_1_label", "2.400000:3:index_3_label"]
        );
        // K beyond the row: the whole row; 0: nothing.
        assert_eq!(classify(&row, 10, None).len(), 4);
        assert!(classify(&row, 0, None).is_empty());
        assert!(classify(&[], 3, None).is_empty());
        // Ties go to the lower index, NaN last.
        let row = [f32::NAN, 2.0, 5.0, 2.0, f32::NAN, -1.0];
        assert_eq!(
            classify(&row, 6, None),
            [
                "5.000000:2",
                "2.000000:1",
                "2.000000:3",
                "-1.000000:5",
                "nan:0",
                "nan:4"
            ]
        );
        assert_eq!(
            classify(&row, 3, None),
            ["5.000000:2", "2.000000:1", "2.000000:3"]
        );
        // Empty and missing labels are left out.
        let labels = Labels::parse("a\n\n");
        assert_eq!(
            classify(&[1.0, 2.0, 3.0], 3, Some(&labels)),
            ["3.000000:2", "2.000000:1", "1.000000:0:a"]
        );
        // %f formatting: rounding, signs, magnitudes.
        assert_eq!(fmt_score(0.0078125), "0.007812");
        assert_eq!(fmt_score(-0.0), "-0.000000");
        assert_eq!(fmt_score(1e-7), "0.000000");
        assert_eq!(fmt_score(1e30), "1000000015047466219876688855040.000000");
        assert_eq!(fmt_score(f32::NEG_INFINITY), "-inf");
        assert_eq!(fmt_score(-f32::NAN), "-nan");
    }

    proptest! {
        #[test]
        fn classify_agrees_with_a_full_sort(
            row in proptest::collection::vec(prop_oneof![-4i8..4, Just(i8::MIN)], 0..40),
            k in 0usize..50,
        ) {
            let row: Vec<f32> = row.iter().map(|&v| if v == i8::MIN { f32::NAN } else { f32::from(v) / 2.0 }).collect();
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| {
                let key = |i: usize| if row[i].is_nan() { f32::NEG_INFINITY } else { row[i] };
                let nan = |i: usize| row[i].is_nan();
                nan(a).cmp(&nan(b)).then(key(b).partial_cmp(&key(a)).unwrap()).then(a.cmp(&b))
            });
            let got = classify(&row, k, None);
            prop_assert_eq!(got.len(), k.min(row.len()));
            for (s, &i) in got.iter().zip(&order) {
                let (_, idx) = s.rsplit_once(':').unwrap();
                prop_assert_eq!(idx.parse::<usize>().unwrap(), i);
            }
        }
    }
}
