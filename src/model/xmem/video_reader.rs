//! Frames and masks in and out of XMem's working resolution, as XMem2 reads them
//! (`inference/data/video_reader.py`, `util/tensor_util.py`, `run_on_video._post_process`):
//! `ToTensor` + ImageNet normalization, then a bilinear resize of the normalized tensor to a
//! short side of 480 without antialias (torchvision 0.13.1, pinned by XMem2), zero padding
//! to a multiple of 16 split evenly; masks resized nearest with their own size formula;
//! probabilities cropped, resized back bilinearly and arg-maxed.

use crate::Result;
use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};

/// The short side XMem2 works at (`size` in `VIDEO_INFERENCE_CONFIG`).
pub const SIZE: usize = 480;
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Padding `(left, right, top, bottom)` that makes `(h, w)` multiples of 16 (`pad_divide_by`).
pub fn pad_divide_by(h: usize, w: usize) -> [usize; 4] {
    let up = |x: usize| x.div_ceil(16) * 16;
    let (dh, dw) = (up(h) - h, up(w) - w);
    [dw / 2, dw - dw / 2, dh / 2, dh - dh / 2]
}

/// torchvision's `Resize(480)` output `(h, w)`: the long side is `int(480 · long / short)`.
pub fn frame_size(h: usize, w: usize) -> (usize, usize) {
    let (short, long) = (h.min(w), h.max(w));
    let new_long = ((SIZE * long) as f64 / short as f64) as usize;
    if w <= h {
        (new_long, SIZE)
    } else {
        (SIZE, new_long)
    }
}

/// `VideoReader.resize_mask`'s `(int(h/min·480), int(w/min·480))`, which can be one pixel
/// shorter than [`frame_size`].
pub fn mask_size(h: usize, w: usize) -> (usize, usize) {
    let m = h.min(w) as f64;
    (
        (h as f64 / m * SIZE as f64) as usize,
        (w as f64 / m * SIZE as f64) as usize,
    )
}

fn pad(x: &Tensor, p: [usize; 4]) -> candle_core::Result<Tensor> {
    x.pad_with_zeros(3, p[0], p[1])?.pad_with_zeros(2, p[2], p[3])
}

/// A frame as XMem sees it: `[1, 3, H, W]` normalized, resized, padded, and its padding.
pub fn frame_tensor(img: &RgbImage, device: &Device) -> Result<(Tensor, [usize; 4])> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planes = vec![0f32; 3 * h * w];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planes[c * h * w + i] = (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    let x = Tensor::from_vec(planes, (1, 3, h, w), device)?;
    let (nh, nw) = frame_size(h, w);
    let x = crate::model::resample::upsample_bilinear(&x, nh, nw)?;
    let p = pad_divide_by(nh, nw);
    Ok((pad(&x, p)?, p))
}

/// PyTorch's `nearest` source index: `min(floor(dst · (float)in/out), in − 1)`.
fn nearest_index(dst: usize, input: usize, output: usize) -> usize {
    if input == output {
        return dst;
    }
    let scale = input as f32 / output as f32;
    ((dst as f32 * scale).floor() as usize).min(input - 1)
}

/// A given index mask as XMem sees it: one 0/1 plane per label of `labels` (`all_to_onehot`),
/// each resized nearest to [`mask_size`] and padded; `[n, H, W]`.
pub fn mask_planes(mask: &GrayImage, labels: &[u8], device: &Device) -> Result<Tensor> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let (nh, nw) = mask_size(h, w);
    let cols: Vec<usize> = (0..nw).map(|x| nearest_index(x, w, nw)).collect();
    let mut out = vec![0f32; labels.len() * nh * nw];
    for y in 0..nh {
        let sy = nearest_index(y, h, nh);
        for (x, &sx) in cols.iter().enumerate() {
            let v = mask.get_pixel(sx as u32, sy as u32)[0];
            if let Some(o) = labels.iter().position(|&l| l == v) {
                out[(o * nh + y) * nw + x] = 1.0;
            }
        }
    }
    let m = Tensor::from_vec(out, (1, labels.len(), nh, nw), device)?;
    Ok(pad(&m, pad_divide_by(nh, nw))?.squeeze(0)?)
}

/// A given mask (non-zero = the object) as a single object's plane `[1, H, W]`.
pub fn mask_tensor(mask: &GrayImage, device: &Device) -> Result<Tensor> {
    let binary = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        image::Luma([u8::from(mask.get_pixel(x, y)[0] > 0)])
    });
    mask_planes(&binary, &[1], device)
}

/// `unpad` + `_post_process`: `[1 + n, H, W]` probabilities at working resolution → the
/// frame's `(height, width)` (bilinear) → the most probable channel per pixel (`argmax`, ties
/// to the lower channel; 0 = background). Returns the channel per pixel and the gap between
/// the two most probable channels.
pub fn post_process(
    prob: &Tensor,
    pad: [usize; 4],
    height: usize,
    width: usize,
) -> Result<(Vec<u8>, Vec<f32>)> {
    let (c, ph, pw) = prob.dims3()?;
    let p = prob
        .narrow(1, pad[2], ph - pad[2] - pad[3])?
        .narrow(2, pad[0], pw - pad[0] - pad[1])?
        .contiguous()?
        .unsqueeze(0)?;
    let p = crate::model::resample::upsample_bilinear(&p, height, width)?
        .squeeze(0)?
        .to_dtype(DType::F32)?;
    let planes: Vec<Vec<f32>> = (0..c)
        .map(|k| p.get(k)?.flatten_all()?.to_vec1())
        .collect::<candle_core::Result<_>>()?;
    let n = height * width;
    let (mut ids, mut gaps) = (vec![0u8; n], vec![0f32; n]);
    for i in 0..n {
        let (mut best, mut second) = (0usize, f32::NEG_INFINITY);
        for k in 1..c {
            let v = planes[k][i];
            if v > planes[best][i] {
                second = planes[best][i];
                best = k;
            } else if v > second {
                second = v;
            }
        }
        ids[i] = best as u8;
        gaps[i] = planes[best][i] - second;
    }
    Ok((ids, gaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_two_formulas() {
        assert_eq!(frame_size(80, 82), (480, 492));
        assert_eq!(mask_size(80, 82), (480, 491));
        assert_eq!(frame_size(71, 97), (480, 655));
        assert_eq!(frame_size(720, 1280), (480, 853));
        assert_eq!(pad_divide_by(480, 655), [0, 1, 0, 0]);
        assert_eq!(pad_divide_by(480, 491), [2, 3, 0, 0]);
    }

    #[test]
    fn post_process_crops_before_resizing() {
        let dev = Device::Cpu;
        // object on the left half of the 6×8 frame, padding columns 1 and 1 around it
        let mut fg = vec![0f32; 6 * 10];
        for y in 0..6 {
            for x in 1..5 {
                fg[y * 10 + x] = 1.0;
            }
        }
        let fg = Tensor::from_vec(fg, (1, 6, 10), &dev).unwrap();
        let prob = Tensor::cat(&[&fg.affine(-1.0, 1.0).unwrap(), &fg], 0).unwrap();
        let (mask, _) = post_process(&prob, [1, 1, 0, 0], 6, 8).unwrap();
        let row: Vec<u8> = mask[..8].to_vec();
        assert_eq!(row, vec![1, 1, 1, 1, 0, 0, 0, 0]);
        assert!(mask.chunks(8).all(|r| r == row.as_slice()));
    }

    #[test]
    fn nearest_matches_pytorch() {
        assert_eq!(nearest_index(5, 10, 10), 5);
        assert_eq!(nearest_index(3, 2, 7), 0);
        assert_eq!(nearest_index(4, 2, 7), 1);
        assert_eq!(nearest_index(6, 2, 7), 1);
    }
}
