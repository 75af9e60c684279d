//! COCO RLE decoding (MeViS mask_dict.json entries): any size and counts string must give a
//! mask or an error, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use videolisa::output::Rle;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let h = u32::from(u16::from_le_bytes([data[0], data[1]])) % 2048;
    let w = u32::from(u16::from_le_bytes([data[2], data[3]])) % 2048;
    let counts = String::from_utf8_lossy(&data[4..]).into_owned();
    let rle = Rle { size: [h, w], counts };
    if let Ok(m) = rle.decode() {
        assert_eq!((m.width(), m.height()), (w, h));
        // what decodes re-encodes to the same mask
        let again = Rle::encode(&m).decode().unwrap();
        assert_eq!(again, m);
    }
    // the JSON form goes through serde first
    if let Ok(r) = serde_json::from_slice::<Rle>(&data[4..]) {
        let _ = r.decode();
    }
});
