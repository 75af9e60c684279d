//! VideoLISA's default mask stage (One-Token-Seg-All): SAM encodes every frame once, in
//! batches, and decodes each batch once per prompt with the prompt's `[SEG]` embedding. Frames
//! are decoded and resized on a second thread while SAM works, through a bounded queue so
//! memory stays flat in the video's length.

use super::sink::MaskSink;
use super::stage::{MaskStage, StageInput, StageSeconds};
use crate::error::Result;
use crate::model::videolisa::VideoLisa;
use crate::preprocess::SamTransform;
use crate::video::{Frame, FrameSource, VideoInfo};
use candle_core::{DType, Tensor};
use image::RgbImage;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::Instant;

/// SAM decodes every frame with each prompt.
pub struct SamEveryFrame;

impl MaskStage for SamEveryFrame {
    fn run(&mut self, input: &StageInput<'_>, sink: &mut MaskSink, sec: &mut StageSeconds) -> Result<()> {
        let (model, video) = (input.model, input.video);
        let keep_frames = input.keep_frames;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<SamFrame>>(2 * input.sam_batch);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || read_sam_frames(model, video, keep_frames, tx));
            let encoded = encode_batches(input, sink, &rx, sec);
            drop(rx);
            let (decode, preprocess) = reader.join().expect("the frame reader does not panic");
            sec.decode += decode;
            sec.preprocess += preprocess;
            encoded
        })
    }
}

/// Frames per SAM image-encoder batch: the user's, else what the device's free memory allows.
pub fn choose_batch(model: &VideoLisa, requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| {
            model
                .visual_model
                .auto_batch(&model.options.device, model.options.sam)
        })
        .max(1)
}

/// SAM's decoding of encoded frames `emb` with one prompt: f32 logits `[B, H, W]` at the frame
/// size, on the model's device (masks are `logit > 0`).
pub fn frame_logits(model: &VideoLisa, emb: &Tensor, prompt: &Tensor, info: &VideoInfo) -> Result<Tensor> {
    let sam = &model.visual_model;
    let (rw, rh) = model.sam_transform.resized_size(info.width, info.height);
    let d = sam.decode_embeddings(emb, prompt, false)?;
    let original = (info.height as usize, info.width as usize);
    let m = sam.postprocess_masks(&d.low_res_masks, (rh as usize, rw as usize), original)?;
    Ok(m.squeeze(1)?.to_dtype(DType::F32)?)
}

/// A frame read ahead for SAM: its index, the frame resized for SAM (normalized and padded on
/// the model's device), the frame itself when overlays need it.
type SamFrame = (usize, RgbImage, Option<RgbImage>);

/// Decodes every frame for SAM on this thread and preprocesses them, handing them over in
/// order through `tx` (bounded, so memory stays flat); returns (decode, preprocess) seconds.
/// With a GPU on the other end, frames are preprocessed in chunks on all CPU threads, so the
/// reader keeps up with the GPU; on the CPU one at a time (the model needs the cores).
fn read_sam_frames(
    model: &VideoLisa,
    video: &dyn FrameSource,
    keep_frames: bool,
    tx: SyncSender<Result<SamFrame>>,
) -> (f64, f64) {
    let (mut decode, mut preprocess) = (0.0, 0.0);
    let chunk = if model.options.device.is_cpu() {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    let mut pending: Vec<Frame> = Vec::with_capacity(chunk);
    let send = |pending: &mut Vec<Frame>, preprocess: &mut f64| -> bool {
        let t = Instant::now();
        let ready = sam_inputs(&model.sam_transform, std::mem::take(pending), keep_frames);
        *preprocess += t.elapsed().as_secs_f64();
        ready.into_iter().all(|f| tx.send(Ok(f)).is_ok())
    };
    let frames = match video.frames() {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.send(Err(e));
            return (decode, preprocess);
        }
    };
    let mut last = Instant::now();
    for frame in frames {
        decode += last.elapsed().as_secs_f64();
        match frame {
            Ok(f) => pending.push(f),
            Err(e) => {
                if send(&mut pending, &mut preprocess) {
                    let _ = tx.send(Err(e));
                }
                return (decode, preprocess);
            }
        }
        if pending.len() == chunk && !send(&mut pending, &mut preprocess) {
            return (decode, preprocess);
        }
        last = Instant::now();
    }
    send(&mut pending, &mut preprocess);
    (decode, preprocess)
}

/// SAM's inputs of decoded frames, in their order (in parallel when there are several).
fn sam_inputs(transform: &SamTransform, frames: Vec<Frame>, keep_frames: bool) -> Vec<SamFrame> {
    use rayon::prelude::*;
    let one = |f: Frame| {
        let p = transform.resize(&f.image);
        (f.index, p, keep_frames.then_some(f.image))
    };
    if frames.len() > 1 {
        frames.into_par_iter().map(one).collect()
    } else {
        frames.into_iter().map(one).collect()
    }
}

/// The frames gathered for one image-encoder batch.
#[derive(Default)]
struct Batch {
    pixels: Vec<Tensor>,
    frames: Vec<(usize, Option<RgbImage>)>,
}

/// The consumer side of [`SamEveryFrame`]: gathers frames into batches and segments each.
fn encode_batches(
    input: &StageInput<'_>,
    sink: &mut MaskSink,
    rx: &Receiver<Result<SamFrame>>,
    sec: &mut StageSeconds,
) -> Result<()> {
    let model = input.model;
    let dev = model.options.device.clone();
    let bar = super::stage::frames_bar(input.video, "SAM");
    let live = input.video.is_live();
    let mut prompts = input.prompts.to_vec();
    let mut batch = Batch::default();
    loop {
        // a live stream's frames are segmented as soon as they are there, not when a batch is full
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Empty) if live && !batch.pixels.is_empty() => {
                let n = batch.pixels.len() as u64;
                segment_batch(input, &prompts, std::mem::take(&mut batch), sink, sec)?;
                bar.inc(n);
                continue;
            }
            Err(TryRecvError::Empty) => match rx.recv() {
                Ok(item) => item,
                Err(_) => break,
            },
            Err(TryRecvError::Disconnected) => break,
        };
        let (index, resized, frame) = item?;
        if let Some(new) = refreshed(input, index, frame.as_ref())? {
            // the frames before this one keep the prompts they were read with
            let n = batch.pixels.len() as u64;
            if n > 0 {
                segment_batch(input, &prompts, std::mem::take(&mut batch), sink, sec)?;
                bar.inc(n);
            }
            prompts = new;
        }
        batch.pixels.push(model.sam_transform.to_tensor(&resized, &dev)?);
        batch.frames.push((index, frame));
        if batch.pixels.len() == input.sam_batch {
            segment_batch(input, &prompts, std::mem::take(&mut batch), sink, sec)?;
            bar.inc(input.sam_batch as u64);
        }
    }
    let rest = batch.pixels.len() as u64;
    if rest > 0 {
        segment_batch(input, &prompts, batch, sink, sec)?;
        bar.inc(rest);
    }
    bar.finish_and_clear();
    Ok(())
}

/// New prompts from the live run's refresh when frame `index` completes a period.
fn refreshed(input: &StageInput<'_>, index: usize, frame: Option<&RgbImage>) -> Result<Option<Vec<Tensor>>> {
    let Some(r) = input.refresh else {
        return Ok(None);
    };
    let frame = frame.ok_or_else(|| crate::error::Error::Internal("--refresh needs the frames".into()))?;
    Ok(r.borrow_mut().arrived(index, frame)?.map(|n| n.prompts))
}

/// Encodes one batch of frames and decodes it with every prompt into the sink.
fn segment_batch(
    input: &StageInput<'_>,
    prompts: &[Tensor],
    batch: Batch,
    sink: &mut MaskSink,
    sec: &mut StageSeconds,
) -> Result<()> {
    let model = input.model;
    let dev = &model.options.device;
    let t = Instant::now();
    let emb = model.visual_model.encode(&Tensor::stack(&batch.pixels, 0)?)?;
    dev.synchronize()?;
    sec.sam_encode += t.elapsed().as_secs_f64();
    for (k, sp) in prompts.iter().enumerate() {
        let t = Instant::now();
        let m = frame_logits(model, &emb, sp, input.video.info())?;
        dev.synchronize()?;
        sec.sam_decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        sink.push(k, m, &batch.frames)?;
        sec.write += t.elapsed().as_secs_f64();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_preprocessed_in_parallel_keep_their_order_and_values() {
        let t = SamTransform {
            target: 64,
            ..SamTransform::default()
        };
        let frames = |n: usize| -> Vec<Frame> {
            (0..n)
                .map(|i| Frame {
                    index: 10 + i,
                    image: RgbImage::from_fn(40 + i as u32, 30, |x, y| {
                        image::Rgb([(x * 7 + i as u32 * 31) as u8, (y * 5) as u8, (x ^ y) as u8])
                    }),
                })
                .collect()
        };
        let together = sam_inputs(&t, frames(9), true);
        let alone: Vec<SamFrame> = frames(9)
            .into_iter()
            .flat_map(|f| sam_inputs(&t, vec![f], false))
            .collect();
        assert_eq!(together.len(), 9);
        for (a, b) in together.iter().zip(&alone) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1, b.1, "frame {}", a.0);
            assert_eq!(a.2.as_ref().map(|i| i.width()), Some(40 + (a.0 - 10) as u32));
            assert!(b.2.is_none());
        }
    }
}
