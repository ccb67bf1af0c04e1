-- Version 2: sample entries belong to one stream.
--
-- In version 1 an entry was shared by every stream whose ingest sent the same box, so one
-- ingest could register another camera's exact box with a false size and codec string and
-- that camera's recordings would be exported with it. Now an ingest can only register, and
-- so only poison, its own stream's entries. Each entry a stream's recordings use becomes
-- that stream's own (copied where several streams shared it); entries no recording uses are
-- dropped (an ingest adds its entries again when it connects).
--
-- Run with foreign keys off, checked before commit (`Database::migrate`).

create table video_sample_entry_v2 (
  id integer primary key,
  stream_id integer not null references stream (id),
  width integer not null check (width > 0),
  height integer not null check (height > 0),
  rfc6381_codec text not null,
  data blob not null,
  unique (stream_id, data)
);

insert into video_sample_entry_v2 (stream_id, width, height, rfc6381_codec, data)
  select u.stream_id, e.width, e.height, e.rfc6381_codec, e.data
  from (select distinct stream_id, video_sample_entry_id from recording) u
  join video_sample_entry e on e.id = u.video_sample_entry_id
  order by u.stream_id, e.id;

update recording set video_sample_entry_id = (
  select n.id
  from video_sample_entry_v2 n
  join video_sample_entry o on o.data = n.data
  where o.id = recording.video_sample_entry_id and n.stream_id = recording.stream_id
);

drop table video_sample_entry;
alter table video_sample_entry_v2 rename to video_sample_entry;
