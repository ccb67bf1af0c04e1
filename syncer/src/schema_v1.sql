-- nvr schema, version 1. Times are 90 kHz ticks; times since the Unix epoch end in _time_90k.

-- Identity of this database; exactly one row.
create table db_info (
  id integer primary key check (id = 1),
  uuid blob not null check (length(uuid) = 16)
);

-- Each syncer start that opened the database for writing. Recordings name the open they were
-- written in; the sample dir's meta file names the last complete one.
create table open (
  id integer primary key,
  uuid blob unique not null check (length(uuid) = 16),
  start_time_90k integer not null
);

-- The one sample directory, bound to this database by its uuid and last complete open.
create table sample_file_dir (
  id integer primary key check (id = 1),
  uuid blob unique not null check (length(uuid) = 16),
  last_complete_open_id integer references open (id)
);

-- A camera stream and its settings.
create table stream (
  id integer primary key autoincrement,
  name text unique not null,
  source text not null,
  -- Quota: committed bytes, each recording rounded up to 4 KiB.
  retain_bytes integer not null check (retain_bytes >= 0),
  flush_if_sec integer not null check (flush_if_sec >= 0),
  rotate_sec integer not null check (rotate_sec > 0),
  -- The next recording id: ids below it are committed, garbage, or gone; never decreases.
  cum_recordings integer not null check (cum_recordings >= 0)
);

create table video_sample_entry (
  id integer primary key,
  width integer not null check (width > 0),
  height integer not null check (height > 0),
  rfc6381_codec text not null,
  data blob unique not null
);

-- One committed recording: a sample file named by the 16-hex-digit composite id.
create table recording (
  -- stream id in the high 32 bits, recording id in the low 32.
  composite_id integer primary key,
  stream_id integer not null references stream (id),
  open_id integer not null references open (id),
  run_offset integer not null check (run_offset >= 0),
  flags integer not null,
  sample_file_bytes integer not null check (sample_file_bytes > 0),
  start_time_90k integer not null,
  wall_duration_90k integer not null check (wall_duration_90k >= 0),
  media_duration_90k integer not null check (media_duration_90k >= 0),
  video_samples integer not null check (video_samples > 0),
  video_sync_samples integer not null check (video_sync_samples >= 0),
  video_sample_entry_id integer not null references video_sample_entry (id),
  local_time_delta_90k integer not null,
  sample_file_blake3 blob not null check (length(sample_file_blake3) = 32),
  end_reason text,
  check (composite_id >> 32 = stream_id)
);

-- The sample index of each recording, kept apart so listing recordings stays cheap.
create table recording_playback (
  composite_id integer primary key references recording (composite_id),
  video_index blob not null check (length(video_index) > 0)
);

-- Ids whose files may exist and must be unlinked: deleted or discarded recordings and abandoned
-- files. A row is removed only after the unlink has been made durable by a directory fsync.
create table garbage (
  composite_id integer primary key
);
