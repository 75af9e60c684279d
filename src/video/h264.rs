//! The parts of an H.264 sequence parameter set that decide whether the built-in decoder
//! (OpenH264: 8-bit 4:2:0 progressive) can read a stream, and how its pictures become RGB
//! (the VUI's matrix coefficients and full-range flag).

/// What a sequence parameter set says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sps {
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, 110 High 10, 122 High 4:2:2, 244 High 4:4:4).
    pub profile_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u32,
    /// Bits per luma sample.
    pub bit_depth_luma: u32,
    /// Bits per chroma sample.
    pub bit_depth_chroma: u32,
    /// False for interlaced (field or MBAFF) coding.
    pub frame_mbs_only: bool,
    /// `video_full_range_flag` (false when the VUI is absent).
    pub full_range: bool,
    /// `matrix_coefficients` (2 = unspecified when absent).
    pub matrix_coefficients: u8,
}

impl Sps {
    /// Why the built-in decoder cannot read this stream, or None.
    pub(crate) fn unsupported(&self) -> Option<String> {
        let profile = match self.profile_idc {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            _ => "unknown",
        };
        let name = format!("H.264 {profile} profile (profile_idc {})", self.profile_idc);
        if self.bit_depth_luma != 8 || self.bit_depth_chroma != 8 {
            return Some(format!(
                "{name} with {}-bit samples (only 8-bit is built in)",
                self.bit_depth_luma.max(self.bit_depth_chroma)
            ));
        }
        if self.chroma_format_idc != 1 {
            let chroma =
                ["4:0:0 (monochrome)", "4:2:0", "4:2:2", "4:4:4"][self.chroma_format_idc.min(3) as usize];
            return Some(format!("{name} with {chroma} chroma (only 4:2:0 is built in)"));
        }
        if !self.frame_mbs_only {
            return Some(format!(
                "interlaced {name} (field or MBAFF coding; only progressive is built in)"
            ));
        }
        None
    }
}

/// Reads bits MSB-first from an RBSP (emulation prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or("the sequence parameter set ends early")?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Result<u32, String> {
        (0..n).try_fold(0u32, |acc, _| Ok((acc << 1) | self.bit()?))
    }

    fn flag(&mut self) -> Result<bool, String> {
        Ok(self.bit()? == 1)
    }

    /// Exp-Golomb `ue(v)`.
    fn ue(&mut self) -> Result<u32, String> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err("malformed Exp-Golomb code in the sequence parameter set".into());
            }
        }
        Ok(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }

    /// Exp-Golomb `se(v)`.
    fn se(&mut self) -> Result<i64, String> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -k / 2 })
    }
}

/// The RBSP of a NAL unit: payload without the header byte and without emulation prevention
/// bytes (the 0x03 of every 00 00 03).
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Result<(), String> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Parses a sequence parameter set NAL unit (header byte included).
pub(crate) fn parse_sps(nal: &[u8]) -> Result<Sps, String> {
    if nal.first().map(|h| h & 0x1F) != Some(7) {
        return Err("not a sequence parameter set".into());
    }
    let data = rbsp(nal);
    let mut r = Bits { data: &data, pos: 0 };
    let profile_idc = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let (mut chroma_format_idc, mut bit_depth_luma, mut bit_depth_chroma) = (1, 8, 8);
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.flag()?; // separate_colour_plane_flag
        }
        bit_depth_luma = 8 + r.ue()?;
        bit_depth_chroma = 8 + r.ue()?;
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.flag()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    r.ue()?; // pic_width_in_mbs_minus1
    r.ue()?; // pic_height_in_map_units_minus1
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    if r.flag()? {
        for _ in 0..4 {
            r.ue()?; // frame crop offsets
        }
    }
    let (full_range, matrix_coefficients) = if r.flag()? {
        vui_colour(&mut r)?
    } else {
        (false, 2)
    };
    Ok(Sps {
        profile_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        frame_mbs_only,
        full_range,
        matrix_coefficients,
    })
}

/// The start of `vui_parameters()`: (video_full_range_flag, matrix_coefficients).
fn vui_colour(r: &mut Bits<'_>) -> Result<(bool, u8), String> {
    if r.flag()? && r.bits(8)? == 255 {
        r.bits(32)?; // sar_width, sar_height
    }
    if r.flag()? {
        r.flag()?; // overscan_appropriate_flag
    }
    if !r.flag()? {
        return Ok((false, 2));
    }
    r.bits(3)?; // video_format
    let full_range = r.flag()?;
    let matrix = if r.flag()? {
        r.bits(16)?; // colour_primaries, transfer_characteristics
        r.bits(8)? as u8
    } else {
        2
    };
    Ok((full_range, matrix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        // 1 → 0, 010 → 1, 011 → 2, 00100 → 3
        let data = [0b1010_0110, 0b0100_0000];
        let mut r = Bits { data: &data, pos: 0 };
        assert_eq!((r.ue(), r.ue(), r.ue(), r.ue()), (Ok(0), Ok(1), Ok(2), Ok(3)));
        assert_eq!(rbsp(&[0x67, 0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
        let data = [0b0100_1100];
        let mut r = Bits { data: &data, pos: 0 };
        assert_eq!((r.se(), r.se()), (Ok(1), Ok(-1)));
    }

    /// SPS bytes written by x264 (through FFmpeg) for the named streams.
    const BASELINE: [u8; 23] = [
        0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x04, 0x7B, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
        0x01, 0x40, 0xF1, 0x22, 0x64, 0x80,
    ];
    const HIGH_BT709: [u8; 27] = [
        0x67, 0x64, 0x00, 0x0C, 0xAC, 0xD9, 0x41, 0x41, 0xFB, 0x01, 0x6A, 0x02, 0x02, 0x02, 0x80, 0x00, 0x00,
        0x03, 0x00, 0x80, 0x00, 0x00, 0x0A, 0x07, 0x8A, 0x14, 0xCB,
    ];
    const HIGH_FULL_RANGE: [u8; 24] = [
        0x67, 0x64, 0x00, 0x0C, 0xAC, 0xD9, 0x41, 0x41, 0xFB, 0x01, 0x6C, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80,
        0x00, 0x00, 0x0A, 0x07, 0x8A, 0x14, 0xCB,
    ];
    const HIGH10: [u8; 26] = [
        0x67, 0x6E, 0x00, 0x0A, 0xA6, 0xCD, 0x94, 0x28, 0x47, 0xE5, 0xC0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04,
        0x00, 0x00, 0x03, 0x00, 0x50, 0x3C, 0x48, 0x96, 0x58,
    ];
    const INTERLACED: [u8; 25] = [
        0x67, 0x64, 0x00, 0x15, 0xAC, 0xD9, 0x42, 0x88, 0xFD, 0xE0, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00,
        0x00, 0x03, 0x00, 0x28, 0x3E, 0x28, 0x53, 0x2C,
    ];

    #[test]
    fn real_parameter_sets() {
        let b = parse_sps(&BASELINE).unwrap();
        assert_eq!((b.profile_idc, b.chroma_format_idc, b.bit_depth_luma), (66, 1, 8));
        assert!(b.frame_mbs_only && !b.full_range);
        assert_eq!(b.matrix_coefficients, 2);
        assert_eq!(b.unsupported(), None);
        let h = parse_sps(&HIGH_BT709).unwrap();
        assert_eq!(
            (h.profile_idc, h.matrix_coefficients, h.full_range),
            (100, 1, false)
        );
        let f = parse_sps(&HIGH_FULL_RANGE).unwrap();
        assert_eq!((f.matrix_coefficients, f.full_range), (2, true));
        let t = parse_sps(&HIGH10).unwrap();
        assert_eq!((t.profile_idc, t.bit_depth_luma), (110, 10));
        assert!(t.unsupported().unwrap().contains("High 10 profile"));
        let i = parse_sps(&INTERLACED).unwrap();
        assert!(!i.frame_mbs_only);
        assert!(i.unsupported().unwrap().starts_with("interlaced"));
        assert!(parse_sps(&BASELINE[..4]).is_err());
    }
}
