#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    segl_fuzz::dpop(data);
});
