//! The snapshot file format: header, checksum and payload codec, and reading a file back with
//! every check made before anything is decoded.
//!
//! # Snapshot file format, version 1
//!
//! ```text
//! offset  bytes  field
//!      0      8  magic b"POOCHSNP"
//!      8      4  format version, u32 little-endian (1)
//!     12      4  byte-order marker: 0x0102_0304 in the writer's native byte order
//!     16      4  the writer's pointer width in bits, u32 little-endian (64 or 32)
//!     20      8  metadata length M in bytes, u64 little-endian
//!     28      8  payload length P in bytes, u64 little-endian
//!     36      8  XXH3-64 of the metadata and payload bytes, u64 little-endian
//!     44      M  metadata: JSON (model name, version, epoch, metrics, spec hash, offsets)
//!   44+M      P  payload: the non-zero weights, abomonation-encoded
//! ```
//!
//! The header is written field by field, so it reads the same everywhere. The payload is
//! abomonation's copy of an in-memory struct, which only this architecture and byte order can
//! read, so the header records both and a reader refuses a file from anywhere else. Nothing is
//! decoded until the magic, version, architecture, lengths and checksum have all been checked.
//!
//! The payload is a `#[repr(C)]` struct followed by the contents of its two vectors:
//!
//! ```text
//! offset (64-bit)  bytes  field
//!               0      4  bits, u32 native: the model has 2^bits weights
//!               4      4  entry count N, u32 native
//!               8     24  header of the vector of coordinates (written as zeros)
//!              32     24  header of the vector of weights (written as zeros)
//!              56     4N  coordinates with a non-zero weight, u32 native, ascending
//!           56+4N     4N  their weights, f32 native
//! ```
//!
//! (On a 32-bit machine the vector headers are 12 bytes each and the coordinates start at 32.)
//! The vector headers abomonation writes hold the writer's heap addresses. They mean nothing
//! in another process, so the writer zeroes them (which also makes equal models give equal
//! bytes) and the reader never trusts them: it rebuilds them from the entry count, which it
//! checks against the payload's length (see `decode_payload` for why).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use abomonation::Abomonation;
use dataflows::publish::model::{Evidence, ModelVersion, RoundMetrics, Weights};
use serde::{Deserialize, Serialize};

use crate::files::io_error;
use crate::publish::SnapshotError;

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"POOCHSNP";

/// The snapshot file format this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest model the store accepts has `2^MAX_BITS` weights (4 GiB of `f32`), so a
/// damaged or hostile file cannot make a reader allocate without bound.
pub const MAX_BITS: u32 = 30;

/// The size of the fixed header at the start of every snapshot file.
pub const HEADER_BYTES: usize = 44;

/// Written in native byte order; reading it back in native order tells whether the writer's
/// byte order was ours.
pub(super) const BYTE_ORDER_MARKER: u32 = 0x0102_0304;

/// The pointer width of this build, which fixes the size of the payload's vector headers.
pub(super) const POINTER_WIDTH_BITS: u32 = usize::BITS;

/// Metadata is a few hundred bytes of JSON; anything near this is not ours.
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// The header's fields, by byte range.
const MAGIC_RANGE: Range<usize> = 0..8;
const FORMAT_VERSION_RANGE: Range<usize> = 8..12;
const BYTE_ORDER_RANGE: Range<usize> = 12..16;
const POINTER_WIDTH_RANGE: Range<usize> = 16..20;
const METADATA_LENGTH_RANGE: Range<usize> = 20..28;
const PAYLOAD_LENGTH_RANGE: Range<usize> = 28..36;
const CHECKSUM_RANGE: Range<usize> = 36..44;
const _: () = assert!(CHECKSUM_RANGE.end == HEADER_BYTES);

/// The payload struct, in a module of its own so that a lint can be allowed for it alone.
mod payload {
    // abomonation_derive puts its impl inside a named constant, which rustc flags as a
    // non-local definition; it is the derive's style, not a problem here.
    #![allow(non_local_definitions)]

    use abomonation_derive::Abomonation;

    /// The payload: the model's non-zero weights, sparse.
    ///
    /// `#[repr(C)]` fixes the field order, so `bits` and `entry_count` sit at known offsets
    /// and can be checked before anything is decoded.
    #[derive(Abomonation)]
    #[repr(C)]
    pub(super) struct SparsePayload {
        /// The model has `2^bits` weights.
        pub(super) bits: u32,
        /// How many coordinates follow: the length of both vectors.
        pub(super) entry_count: u32,
        /// Ascending coordinates whose weight is not `+0.0`.
        pub(super) indices: Vec<u32>,
        /// The weight at each of `indices`, bit for bit.
        pub(super) weights: Vec<f32>,
    }
}
use payload::SparsePayload;

/// The size of the struct part of the payload, before the vectors' contents.
const PAYLOAD_PREFIX_BYTES: usize = size_of::<SparsePayload>();

/// Where the two vector headers lie in the payload.
const PAYLOAD_VECTOR_HEADERS: Range<usize> =
    offset_of!(SparsePayload, indices)..PAYLOAD_PREFIX_BYTES;

/// Each payload entry is one coordinate and one weight.
const PAYLOAD_ENTRY_BYTES: usize = size_of::<u32>() + size_of::<f32>();

/// The largest payload a valid file can have.
const MAX_PAYLOAD_BYTES: u64 =
    PAYLOAD_PREFIX_BYTES as u64 + ((PAYLOAD_ENTRY_BYTES as u64) << MAX_BITS);

// abomonation copies the payload struct byte for byte, padding included, and reading padding is
// undefined behaviour. These pin down that there is none: two `u32`s, then two vector headers
// of three initialised words each, laid end to end.
const _: () = assert!(size_of::<Vec<u32>>() == 3 * size_of::<usize>());
const _: () = assert!(size_of::<Vec<f32>>() == size_of::<Vec<u32>>());
const _: () = assert!(offset_of!(SparsePayload, entry_count) == size_of::<u32>());
const _: () = assert!(offset_of!(SparsePayload, indices) == 2 * size_of::<u32>());
const _: () = assert!(
    offset_of!(SparsePayload, weights)
        == offset_of!(SparsePayload, indices) + size_of::<Vec<u32>>()
);
const _: () =
    assert!(PAYLOAD_PREFIX_BYTES == offset_of!(SparsePayload, weights) + size_of::<Vec<f32>>());
// The vectors' contents start right after the prefix and must be aligned for u32 and f32.
const _: () = assert!(PAYLOAD_PREFIX_BYTES.is_multiple_of(align_of::<u32>()));

/// What the caller knows about where a model version came from, stored beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Hex of a hash of the pipeline spec the features were computed by. A model is only
    /// meaningful with the features it was trained on.
    pub spec_hash: String,
    /// Hex of a hash of what gives the weights their meaning ([`crate::spec::features_hash`]);
    /// empty in snapshots written before it was recorded.
    pub features_hash: String,
    /// For each source, the byte offset its reader had reached when the version was published.
    pub source_offsets: BTreeMap<String, u64>,
}

/// A snapshot as read back from disk.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The model version, weights dense again.
    pub model: ModelVersion,
    /// What the writer knew about its origin.
    pub meta: SnapshotMeta,
    /// When the snapshot was written, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The XXH3-64 checksum of the file's metadata and payload, which identifies its content.
    pub checksum: u64,
}

/// Reads and checks a snapshot file: magic, format version, byte order and pointer width,
/// lengths against the file's size, and checksum, all before decoding; then the metadata and
/// a validated payload. Refuses any damaged or foreign file with an error naming it, and
/// never panics, whatever the bytes.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let mut file = File::open(path).map_err(io_error(path, "open the snapshot"))?;
    let file_bytes = file
        .metadata()
        .map_err(io_error(path, "read the snapshot's size"))?
        .len();
    if file_bytes < HEADER_BYTES as u64 {
        return Err(SnapshotError::TooShort {
            path: path.to_owned(),
            file_bytes,
        });
    }
    let mut header_bytes = [0u8; HEADER_BYTES];
    file.read_exact(&mut header_bytes)
        .map_err(io_error(path, "read the snapshot header"))?;
    let header = Header::parse(path, &header_bytes, file_bytes)?;

    // read the rest, whose size the header now vouches for
    let body_bytes = header.metadata_bytes + header.payload_bytes;
    let mut body = Vec::new();
    let reserved = usize::try_from(body_bytes)
        .ok()
        .and_then(|capacity| body.try_reserve_exact(capacity).ok());
    if reserved.is_none() {
        let out_of_memory = io::Error::from(io::ErrorKind::OutOfMemory);
        return Err(io_error(path, "read the snapshot")(out_of_memory).into());
    }
    file.take(body_bytes)
        .read_to_end(&mut body)
        .map_err(io_error(path, "read the snapshot"))?;
    if body.len() as u64 != body_bytes {
        // The file shrank after its size was taken.
        return Err(SnapshotError::SizeMismatch {
            path: path.to_owned(),
            metadata_bytes: header.metadata_bytes,
            payload_bytes: header.payload_bytes,
            file_bytes: HEADER_BYTES as u64 + body.len() as u64,
        });
    }

    let computed = xxhash_rust::xxh3::xxh3_64(&body);
    if computed != header.checksum {
        return Err(SnapshotError::ChecksumMismatch {
            path: path.to_owned(),
            stored: header.checksum,
            computed,
        });
    }

    // Both lengths fit in the body, which is in memory, so they fit in usize.
    let (metadata, payload) = body.split_at(body.len() - header.payload_bytes as usize);
    let record: MetadataRecord =
        serde_json::from_slice(metadata).map_err(|source| SnapshotError::Metadata {
            path: path.to_owned(),
            source,
        })?;
    let (payload_bits, weights) = decode_payload(path, payload)?;
    if payload_bits != record.bits {
        return Err(SnapshotError::Payload {
            path: path.to_owned(),
            reason: format!(
                "it holds 2^{payload_bits} weights but the metadata says bits = {}",
                record.bits
            ),
        });
    }
    Ok(record.into_snapshot(Arc::new(weights), header.checksum))
}

/// The header's variable fields, once checked.
struct Header {
    metadata_bytes: u64,
    payload_bytes: u64,
    checksum: u64,
}

impl Header {
    /// Writes a header for the given sections, in the layout the module doc draws.
    fn encode(metadata_bytes: u64, payload_bytes: u64, checksum: u64) -> [u8; HEADER_BYTES] {
        let mut header = [0u8; HEADER_BYTES];
        header[MAGIC_RANGE].copy_from_slice(&MAGIC);
        header[FORMAT_VERSION_RANGE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[BYTE_ORDER_RANGE].copy_from_slice(&BYTE_ORDER_MARKER.to_ne_bytes());
        header[POINTER_WIDTH_RANGE].copy_from_slice(&POINTER_WIDTH_BITS.to_le_bytes());
        header[METADATA_LENGTH_RANGE].copy_from_slice(&metadata_bytes.to_le_bytes());
        header[PAYLOAD_LENGTH_RANGE].copy_from_slice(&payload_bytes.to_le_bytes());
        header[CHECKSUM_RANGE].copy_from_slice(&checksum.to_le_bytes());
        header
    }

    /// Checks a header against this build and the file's size, in the order that gives the
    /// most telling error: whose file is it, can we read it, is it whole.
    fn parse(
        path: &Path,
        header: &[u8; HEADER_BYTES],
        file_bytes: u64,
    ) -> Result<Header, SnapshotError> {
        let path = || path.to_owned();
        let magic: [u8; 8] = field(header, MAGIC_RANGE);
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic {
                path: path(),
                found: magic,
            });
        }
        let format_version = u32::from_le_bytes(field(header, FORMAT_VERSION_RANGE));
        if format_version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormatVersion {
                path: path(),
                found: format_version,
            });
        }
        let byte_order: [u8; 4] = field(header, BYTE_ORDER_RANGE);
        if byte_order != BYTE_ORDER_MARKER.to_ne_bytes() {
            return Err(SnapshotError::ForeignByteOrder {
                path: path(),
                found: byte_order,
            });
        }
        let pointer_width_bits = u32::from_le_bytes(field(header, POINTER_WIDTH_RANGE));
        if pointer_width_bits != POINTER_WIDTH_BITS {
            return Err(SnapshotError::ForeignPointerWidth {
                path: path(),
                found_bits: pointer_width_bits,
            });
        }
        let metadata_bytes = u64::from_le_bytes(field(header, METADATA_LENGTH_RANGE));
        let payload_bytes = u64::from_le_bytes(field(header, PAYLOAD_LENGTH_RANGE));
        for (section, bytes, limit) in [
            ("metadata section", metadata_bytes, MAX_METADATA_BYTES),
            ("payload", payload_bytes, MAX_PAYLOAD_BYTES),
        ] {
            if bytes > limit {
                return Err(SnapshotError::SectionTooLarge {
                    path: path(),
                    section,
                    bytes,
                    limit,
                });
            }
        }
        // Both are bounded above, so the sum cannot overflow.
        if HEADER_BYTES as u64 + metadata_bytes + payload_bytes != file_bytes {
            return Err(SnapshotError::SizeMismatch {
                path: path(),
                metadata_bytes,
                payload_bytes,
                file_bytes,
            });
        }
        Ok(Header {
            metadata_bytes,
            payload_bytes,
            checksum: u64::from_le_bytes(field(header, CHECKSUM_RANGE)),
        })
    }
}

/// A fixed-size field of the header.
fn field<const N: usize>(header: &[u8; HEADER_BYTES], range: Range<usize>) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&header[range]);
    bytes
}

/// Checks that the format can hold a model: at most `2^MAX_BITS` weights, and every
/// coordinate with a weight below `2^bits`.
pub(super) fn check_encodable(model: &ModelVersion) -> Result<(), SnapshotError> {
    let unsupported = |reason: String| SnapshotError::UnsupportedModel {
        model: model.name.clone(),
        version: model.version,
        reason,
    };
    if model.bits > MAX_BITS {
        return Err(unsupported(format!(
            "it has 2^{} weights, more than the 2^{MAX_BITS} the store accepts",
            model.bits
        )));
    }
    if let Some(&last) = model.weights.indices().last()
        && u64::from(last) >= 1u64 << model.bits
    {
        return Err(unsupported(format!(
            "it has a weight at coordinate {last}, outside its 2^{} weights",
            model.bits
        )));
    }
    Ok(())
}

/// The bytes of a snapshot file for a model that passed [`check_encodable`], and its checksum.
pub(super) fn encode_file(
    model: &ModelVersion,
    meta: &SnapshotMeta,
    created_unix_ms: u64,
) -> Result<(Vec<u8>, u64), SnapshotError> {
    let encode_error = |reason: String| SnapshotError::Encode {
        model: model.name.clone(),
        version: model.version,
        reason,
    };
    let record = MetadataRecord::new(model, meta, created_unix_ms);
    let metadata = serde_json::to_vec(&record).map_err(|error| encode_error(error.to_string()))?;
    let payload = encode_payload(&SparsePayload::from_weights(model.bits, &model.weights))
        .map_err(|error| encode_error(error.to_string()))?;
    Ok(assemble_file(&metadata, &payload))
}

/// Puts a header in front of metadata and payload; returns the file's bytes and its checksum.
fn assemble_file(metadata: &[u8], payload: &[u8]) -> (Vec<u8>, u64) {
    let mut file = Vec::with_capacity(HEADER_BYTES + metadata.len() + payload.len());
    file.extend_from_slice(&[0u8; HEADER_BYTES]);
    file.extend_from_slice(metadata);
    file.extend_from_slice(payload);
    let checksum = xxhash_rust::xxh3::xxh3_64(&file[HEADER_BYTES..]);
    let header = Header::encode(metadata.len() as u64, payload.len() as u64, checksum);
    file[..HEADER_BYTES].copy_from_slice(&header);
    (file, checksum)
}

impl SparsePayload {
    /// The payload of a model of `2^bits` weights, `bits <= MAX_BITS`.
    ///
    /// The sparse form leaves out only `+0.0`, so `-0.0` and NaN survive bit for bit.
    fn from_weights(bits: u32, weights: &Weights) -> SparsePayload {
        SparsePayload {
            bits,
            // at most 2^MAX_BITS coordinates, so the count fits in u32
            entry_count: weights.len() as u32,
            indices: weights.indices().to_vec(),
            weights: weights.values().to_vec(),
        }
    }
}

/// Encodes a payload with abomonation, then zeroes its vector headers (see the module doc).
fn encode_payload(payload: &SparsePayload) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(abomonation::measure(payload));
    // SAFETY: `encode` copies out the bytes of `payload` and of its vectors' elements. The
    // struct is `repr(C)` without padding (asserted at compile time next to it), so every byte
    // is initialised, and `u32` and `f32` elements have no padding either.
    unsafe { abomonation::encode(payload, &mut bytes) }?;
    bytes[PAYLOAD_VECTOR_HEADERS].fill(0);
    Ok(bytes)
}

/// Decodes and validates a payload into `bits` and the weights.
///
/// The only part of the payload that abomonation reinterprets as something other than plain
/// numbers is the pair of vector headers: pointers, capacities and lengths. A checksum cannot
/// vouch for them (XXH3 is no signature; anyone can write a file whose checksum matches), and a
/// null pointer or an absurd length would be undefined behaviour. So they are never taken from
/// the file: the entry count is checked against the payload's length, and the headers are
/// replaced by those of vectors of that length made here. What abomonation then reads from the
/// file is only `u32`s and `f32`s, for which any bits are valid, and those are validated after.
fn decode_payload(path: &Path, payload: &[u8]) -> Result<(u32, Weights), SnapshotError> {
    let invalid = |reason: String| SnapshotError::Payload {
        path: path.to_owned(),
        reason,
    };
    if payload.len() < PAYLOAD_PREFIX_BYTES {
        return Err(invalid(format!(
            "it is {} bytes, shorter than its {PAYLOAD_PREFIX_BYTES}-byte fixed part",
            payload.len()
        )));
    }
    let native_u32 = |offset: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&payload[offset..offset + 4]);
        u32::from_ne_bytes(bytes)
    };
    let bits = native_u32(offset_of!(SparsePayload, bits));
    let entry_count = native_u32(offset_of!(SparsePayload, entry_count));
    if bits > MAX_BITS {
        return Err(invalid(format!(
            "bits = {bits}, more than the {MAX_BITS} the store accepts"
        )));
    }
    let entry_bytes = (payload.len() - PAYLOAD_PREFIX_BYTES) as u64;
    let expected_entry_bytes = u64::from(entry_count) * PAYLOAD_ENTRY_BYTES as u64;
    if entry_bytes != expected_entry_bytes {
        return Err(invalid(format!(
            "it says {entry_count} entries, which take {expected_entry_bytes} bytes, but {entry_bytes} follow its fixed part"
        )));
    }
    let weight_count = 1usize << bits;
    let entries = entry_count as usize;
    if entries > weight_count {
        return Err(invalid(format!(
            "it has {entries} entries for a model of only {weight_count} weights"
        )));
    }

    // the fixed part, with vector headers made here rather than read from the file
    let template = SparsePayload {
        bits,
        entry_count,
        indices: vec![0; entries],
        weights: vec![0.0; entries],
    };
    let mut prefix = PrefixCapture {
        bytes: Vec::with_capacity(PAYLOAD_PREFIX_BYTES),
    };
    // SAFETY: as in `encode_payload`: the template is a valid, padding-free SparsePayload. The
    // capture refuses everything after the fixed part, so this stops without copying the
    // template's elements, and the error that stops it is expected.
    let _stopped_after_prefix = unsafe { abomonation::encode(&template, &mut prefix) };
    if prefix.bytes.len() != PAYLOAD_PREFIX_BYTES {
        return Err(invalid("its fixed part could not be rebuilt".to_owned()));
    }

    // an aligned copy: abomonation reads u32s and f32s in place
    let mut aligned = vec![0u64; payload.len().div_ceil(size_of::<u64>())];
    // SAFETY: `aligned` is initialised and at least `payload.len()` bytes long, `u8` has no
    // alignment or validity requirements, and the view borrows `aligned` exclusively.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), payload.len()) };
    bytes.copy_from_slice(payload);
    bytes[..PAYLOAD_PREFIX_BYTES].copy_from_slice(&prefix.bytes);

    // SAFETY: `bytes` comes from a Vec<u64>, so it is 8-aligned, and its fixed part is the
    // encoding of a valid SparsePayload made just above whose vectors have `entries` elements
    // each; the elements, checked above, fill exactly the rest of `bytes`.
    let decoded = unsafe { decode_in_place(bytes) };
    let Some((decoded, rest)) = decoded else {
        return Err(invalid("abomonation could not decode it".to_owned()));
    };
    if !rest.is_empty() || decoded.indices.len() != entries || decoded.weights.len() != entries {
        return Err(invalid(
            "abomonation decoded a different number of entries than it says".to_owned(),
        ));
    }

    // the canonical sparse form the writer makes, inside the model
    if let Some(position) = decoded
        .indices
        .iter()
        .position(|&index| u64::from(index) >= weight_count as u64)
    {
        return Err(invalid(format!(
            "entry {position} has coordinate {}, outside a model of 2^{bits} weights",
            decoded.indices[position]
        )));
    }
    let weights =
        Weights::from_sorted(decoded.indices.clone(), decoded.weights.clone()).map_err(invalid)?;
    Ok((bits, weights))
}

/// What `abomonation::decode::<SparsePayload>` does, but sound under Miri's Stacked Borrows
/// model: `decode` makes its `&mut T` from a `&mut u8` to the first byte only, which Miri
/// flags as undefined behaviour; here the reference comes from a pointer to the whole fixed
/// part. Returns the payload, borrowing `bytes`, and whatever bytes its vectors did not use.
///
/// # Safety
///
/// `bytes` must be aligned for `SparsePayload`, and its first `PAYLOAD_PREFIX_BYTES` must be a
/// valid `SparsePayload` (as encoded in this process), so that its vector lengths are sane.
unsafe fn decode_in_place(bytes: &mut [u8]) -> Option<(&SparsePayload, &mut [u8])> {
    let (fixed, elements) = bytes.split_at_mut_checked(PAYLOAD_PREFIX_BYTES)?;
    // SAFETY: the pointer covers exactly the fixed part, which the caller promises is aligned
    // and holds a valid SparsePayload; `fixed` is borrowed exclusively for the result's life.
    let payload = unsafe { &mut *fixed.as_mut_ptr().cast::<SparsePayload>() };
    // SAFETY: `exhume` repoints each vector at its elements in `elements`, after checking they
    // fit, before anything reads through the vector; the elements are u32 and f32, valid for
    // any bits. The vectors are never dropped: only a shared reference to them escapes.
    let rest = unsafe { payload.exhume(elements) }?;
    Some((payload, rest))
}

/// Keeps the first `PAYLOAD_PREFIX_BYTES` written to it and refuses the rest.
struct PrefixCapture {
    bytes: Vec<u8>,
}

impl Write for PrefixCapture {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let room = PAYLOAD_PREFIX_BYTES - self.bytes.len();
        if room == 0 {
            return Err(io::Error::other("the fixed part is complete"));
        }
        let taken = room.min(buffer.len());
        self.bytes.extend_from_slice(&buffer[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The metadata section as stored: JSON, one object.
#[derive(Serialize, Deserialize)]
struct MetadataRecord {
    model: String,
    version: u64,
    epoch: u64,
    published_at: u64,
    bits: u32,
    metrics: MetricsRecord,
    spec_hash: String,
    #[serde(default)]
    features_hash: String,
    source_offsets: BTreeMap<String, u64>,
    created_unix_ms: u64,
}

/// `RoundMetrics` as stored. Not the struct itself: serde_json writes a NaN loss (a diverged
/// model has one) as `null` and then cannot read it back, and its default float parsing may be
/// off by one ulp. The loss is therefore stored as a string in Rust's round-trip notation.
#[derive(Serialize, Deserialize)]
struct MetricsRecord {
    examples: u64,
    #[serde(with = "exact_f64")]
    logloss: f64,
    /// The round's examples by scoring version (absent in snapshots written before it was).
    #[serde(default)]
    scored: Vec<EvidenceRecord>,
}

/// `Evidence` as stored, its figures in round-trip notation like the loss.
#[derive(Serialize, Deserialize)]
struct EvidenceRecord {
    scored_by: u64,
    examples: u64,
    positives: u64,
    #[serde(with = "exact_f64")]
    loss_sum: f64,
    #[serde(with = "exact_f64")]
    min_probability: f64,
    #[serde(with = "exact_f64")]
    max_probability: f64,
    extreme: u64,
}

impl MetadataRecord {
    fn new(model: &ModelVersion, meta: &SnapshotMeta, created_unix_ms: u64) -> MetadataRecord {
        MetadataRecord {
            model: model.name.clone(),
            version: model.version,
            epoch: model.epoch,
            published_at: model.published_at,
            bits: model.bits,
            metrics: MetricsRecord {
                examples: model.metrics.examples,
                logloss: model.metrics.logloss,
                scored: model
                    .metrics
                    .scored
                    .iter()
                    .map(|evidence| EvidenceRecord {
                        scored_by: evidence.scored_by,
                        examples: evidence.examples,
                        positives: evidence.positives,
                        loss_sum: evidence.loss_sum,
                        min_probability: evidence.min_probability,
                        max_probability: evidence.max_probability,
                        extreme: evidence.extreme,
                    })
                    .collect(),
            },
            spec_hash: meta.spec_hash.clone(),
            features_hash: meta.features_hash.clone(),
            source_offsets: meta.source_offsets.clone(),
            created_unix_ms,
        }
    }

    fn into_snapshot(self, weights: Arc<Weights>, checksum: u64) -> Snapshot {
        Snapshot {
            model: ModelVersion {
                name: self.model,
                version: self.version,
                epoch: self.epoch,
                published_at: self.published_at,
                bits: self.bits,
                weights,
                metrics: RoundMetrics {
                    examples: self.metrics.examples,
                    logloss: self.metrics.logloss,
                    scored: self
                        .metrics
                        .scored
                        .into_iter()
                        .map(|evidence| Evidence {
                            scored_by: evidence.scored_by,
                            examples: evidence.examples,
                            positives: evidence.positives,
                            loss_sum: evidence.loss_sum,
                            min_probability: evidence.min_probability,
                            max_probability: evidence.max_probability,
                            extreme: evidence.extreme,
                        })
                        .collect(),
                },
            },
            meta: SnapshotMeta {
                spec_hash: self.spec_hash,
                features_hash: self.features_hash,
                source_offsets: self.source_offsets,
            },
            created_unix_ms: self.created_unix_ms,
            checksum,
        }
    }
}

/// An `f64` as a string that parses back to the same value: Rust's `Debug` notation, which
/// is the shortest that round-trips, and spells the non-finite values `NaN`, `inf`, `-inf`.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("{text:?} is not a number")))
    }
}

/// The byte order a marker was written in, in words, for an error message.
pub(super) fn describe_byte_order(marker: [u8; 4]) -> String {
    if marker == BYTE_ORDER_MARKER.to_le_bytes() {
        "little-endian machine".to_owned()
    } else if marker == BYTE_ORDER_MARKER.to_be_bytes() {
        "big-endian machine".to_owned()
    } else {
        format!("machine of unknown byte order (marker {marker:02x?})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;

    use proptest::prelude::*;

    use crate::publish::fixtures::{meta, model, weight_bits};

    /// The bytes of a small valid snapshot file, and a directory to try variations in.
    fn small_snapshot_bytes() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (bytes, _) = encode_file(&model(1, 3), &meta(), 1_700_000_000_000).expect("encode");
        (dir, bytes)
    }

    /// A file's metadata and payload sections, split by its header's lengths.
    fn sections(file: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let header: [u8; HEADER_BYTES] = file[..HEADER_BYTES].try_into().expect("header");
        let metadata_bytes = u64::from_le_bytes(field(&header, METADATA_LENGTH_RANGE)) as usize;
        let (metadata, payload) = file[HEADER_BYTES..].split_at(metadata_bytes);
        (metadata.to_vec(), payload.to_vec())
    }

    /// Reads `bytes` as if they were a snapshot file.
    fn read_bytes(dir: &Path, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let path = dir.join("probe.snap");
        fs::write(&path, bytes).expect("write probe file");
        read(&path)
    }

    /// Reads a file made of `metadata` and `payload` with a header and checksum that vouch for
    /// them: what a careless or hostile writer could produce.
    fn read_crafted(
        dir: &Path,
        metadata: &[u8],
        payload: &[u8],
    ) -> Result<Snapshot, SnapshotError> {
        read_bytes(dir, &assemble_file(metadata, payload).0)
    }

    #[test]
    fn every_truncation_is_refused() {
        let (dir, bytes) = small_snapshot_bytes();
        for length in 0..bytes.len() {
            match read_bytes(dir.path(), &bytes[..length]) {
                Err(SnapshotError::TooShort { .. }) if length < HEADER_BYTES => {}
                Err(SnapshotError::SizeMismatch { file_bytes, .. }) if length >= HEADER_BYTES => {
                    assert_eq!(file_bytes, length as u64);
                }
                other => panic!("truncated to {length} bytes: {other:?}"),
            }
        }
        assert!(read_bytes(dir.path(), &bytes).is_ok());
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let (dir, bytes) = small_snapshot_bytes();
        for position in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[position] ^= flip;
                let result = read_bytes(dir.path(), &damaged);
                match (&result, position) {
                    (Err(SnapshotError::ChecksumMismatch { .. }), HEADER_BYTES..) => {}
                    (Err(_), 0..HEADER_BYTES) => {}
                    _ => panic!("byte {position} ^ {flip:#04x}: {result:?}"),
                }
            }
        }
    }

    #[test]
    fn header_damage_gets_the_matching_error() {
        let (dir, bytes) = small_snapshot_bytes();
        let patched = |range: Range<usize>, value: &[u8]| {
            let mut patched = bytes.clone();
            patched[range].copy_from_slice(value);
            read_bytes(dir.path(), &patched)
        };

        let error = patched(FORMAT_VERSION_RANGE, &2u32.to_le_bytes()).unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::UnsupportedFormatVersion { found: 2, .. }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("probe.snap: snapshot format version 2"),
            "{error}"
        );

        let mut swapped = BYTE_ORDER_MARKER.to_ne_bytes();
        swapped.reverse();
        let error = patched(BYTE_ORDER_RANGE, &swapped).unwrap_err();
        assert!(
            matches!(error, SnapshotError::ForeignByteOrder { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("big-endian") && message.contains("little-endian"),
            "{message}"
        );

        let other_width = if POINTER_WIDTH_BITS == 64 { 32u32 } else { 64 };
        let error = patched(POINTER_WIDTH_RANGE, &other_width.to_le_bytes()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::ForeignPointerWidth { found_bits, .. } if found_bits == other_width),
            "{error}"
        );

        let error = patched(MAGIC_RANGE, b"FWRE\0\0\0\0").unwrap_err();
        assert!(matches!(error, SnapshotError::BadMagic { .. }), "{error}");

        let error = patched(PAYLOAD_LENGTH_RANGE, &u64::MAX.to_le_bytes()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::SectionTooLarge { .. }),
            "{error}"
        );
    }

    #[test]
    fn equal_models_give_equal_payloads() {
        // The writer zeroes the heap addresses abomonation copies, so content alone decides
        // the payload's bytes.
        // Both models live at once, so their vectors lie at different addresses.
        let (first, second) = (model(1, 5), model(1, 5));
        let (one, _) = encode_file(&first, &meta(), 1_700_000_000_000).expect("encode");
        let (two, _) = encode_file(&second, &meta(), 1_700_000_000_001).expect("encode");
        assert_ne!(
            sections(&one).0,
            sections(&two).0,
            "the creation times differ"
        );
        assert_eq!(sections(&one).1, sections(&two).1);
    }

    #[test]
    fn vector_headers_in_the_file_are_never_trusted() {
        let (dir, bytes) = small_snapshot_bytes();
        let (metadata, mut payload) = sections(&bytes);
        // pointers and lengths a naive decode would follow off a cliff
        payload[PAYLOAD_VECTOR_HEADERS].fill(0xff);
        let snapshot = read_crafted(dir.path(), &metadata, &payload).expect("still loads");
        assert_eq!(weight_bits(&snapshot.model), weight_bits(&model(1, 3)));
    }

    #[test]
    fn payloads_with_valid_checksums_but_invalid_content_are_refused() {
        let (dir, bytes) = small_snapshot_bytes();
        let (metadata, _) = sections(&bytes);
        let payload = |bits: u32, entry_count: u32, indices: Vec<u32>, weights: Vec<f32>| {
            encode_payload(&SparsePayload {
                bits,
                entry_count,
                indices,
                weights,
            })
            .expect("encode")
        };
        let cases = [
            (
                "descending",
                payload(3, 2, vec![5, 2], vec![1.0, 2.0]),
                "not ascending",
            ),
            (
                "repeated",
                payload(3, 2, vec![2, 2], vec![1.0, 2.0]),
                "not ascending",
            ),
            (
                "outside",
                payload(3, 1, vec![8], vec![1.0]),
                "outside a model",
            ),
            (
                "explicit zero",
                payload(3, 1, vec![3], vec![0.0]),
                "stores +0.0",
            ),
            (
                "count too high",
                payload(3, 3, vec![1, 2], vec![1.0, 2.0]),
                "3 entries",
            ),
            (
                "count too low",
                payload(3, 1, vec![1, 2], vec![1.0, 2.0]),
                "1 entries",
            ),
            (
                "too many entries",
                payload(1, 3, vec![0, 1, 2], vec![1.0; 3]),
                "only 2 weights",
            ),
            ("huge bits", payload(31, 0, vec![], vec![]), "bits = 31"),
            (
                "other bits than the metadata",
                payload(4, 1, vec![1], vec![1.0]),
                "metadata says bits = 3",
            ),
            ("empty", Vec::new(), "shorter than its"),
        ];
        for (case, payload, expected) in cases {
            match read_crafted(dir.path(), &metadata, &payload) {
                Err(SnapshotError::Payload { reason, .. }) => {
                    assert!(reason.contains(expected), "{case}: {reason}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
        let (_, good_payload) = sections(&bytes);
        let error = read_crafted(dir.path(), b"{\"model\": 3}", &good_payload).unwrap_err();
        assert!(matches!(error, SnapshotError::Metadata { .. }), "{error}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dir = tempfile::tempdir().expect("temporary directory");
            prop_assert!(read_bytes(dir.path(), &bytes).is_err());
        }

        #[test]
        fn arbitrary_sections_behind_a_valid_header_never_panic(
            metadata in proptest::collection::vec(any::<u8>(), 0..64),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let dir = tempfile::tempdir().expect("temporary directory");
            prop_assert!(read_crafted(dir.path(), &metadata, &payload).is_err());
        }

        #[test]
        fn edited_payloads_with_valid_checksums_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let (dir, bytes) = small_snapshot_bytes();
            let (metadata, mut payload) = sections(&bytes);
            for (position, value) in edits {
                let position = position.index(payload.len());
                payload[position] = value;
            }
            // An edit may happen to leave a valid model; then it must be a whole one.
            if let Ok(snapshot) = read_crafted(dir.path(), &metadata, &payload) {
                prop_assert_eq!(snapshot.model.weights.len(), 1usize << snapshot.model.bits);
            }
        }
    }
}
