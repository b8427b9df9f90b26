#include "rpc/store_convert.h"

#include "seqkv/proto/wire.h"

namespace seqkv::rpc {
namespace {

void TierStatsToProto(const server::TierStats& t, v1::TierStats* out) {
  out->set_chunks(t.chunks);
  out->set_logical_bytes(t.logical_bytes);
  out->set_physical_bytes(t.physical_bytes);
  out->set_budget_bytes(t.budget_bytes);
  out->set_evictions(t.evictions);
}

}  // namespace

v1::Tier TierToProto(server::TierKind tier) {
  switch (tier) {
    case server::TierKind::kDram: return v1::TIER_DRAM;
    case server::TierKind::kDisk: return v1::TIER_DISK;
    case server::TierKind::kNone: break;
  }
  return v1::TIER_NONE;
}

server::TierKind TierFromProto(v1::Tier tier) {
  return tier == v1::TIER_DRAM ? server::TierKind::kDram : server::TierKind::kDisk;
}

void StatsToProto(const server::StoreStats& s, v1::StatsResponse* out) {
  // The disk tier holds every chunk (DRAM is a cache), so it is the store's total.
  out->set_logical_bytes(s.disk.logical_bytes);
  out->set_physical_bytes(s.disk.physical_bytes);
  out->set_chunks(s.disk.chunks);
  out->set_namespaces(s.namespaces);
  out->set_raw_kv_bytes(s.raw_kv_bytes);
  TierStatsToProto(s.dram, out->mutable_dram());
  TierStatsToProto(s.disk, out->mutable_disk());
  out->set_lookups(s.lookups);
  out->set_lookup_tokens(s.lookup_tokens);
  out->set_hit_tokens(s.hit_tokens);
  out->set_puts(s.puts);
  out->set_dedup_puts(s.dedup_puts);
  out->set_gets(s.gets);
  out->set_get_hits(s.get_hits);
  out->set_promotions(s.promotions);
  out->set_checksum_failures(s.checksum_failures);
  out->set_dedup_ratio(s.dedup_ratio);
  out->set_compression_ratio(s.compression_ratio);
}

void NamespaceInfoToProto(const server::NamespaceInfo& info, v1::NamespaceInfo* out) {
  out->set_id(wire::KeyToBytes(info.id));
  wire::NamespaceToProto(info.fields, out->mutable_fields());
  out->set_chunks(info.chunks);
  out->set_logical_bytes(info.logical_bytes);
  out->set_physical_bytes(info.physical_bytes);
}

void ChunkInfoToProto(const server::ChunkInfo& c, v1::InspectResponse* out) {
  out->set_namespace_id(wire::KeyToBytes(c.ns));
  out->set_key(wire::KeyToBytes(c.key));
  if (c.parent) out->set_parent_key(wire::KeyToBytes(*c.parent));
  for (const Key128& child : c.children) *out->add_children() = wire::KeyToBytes(child);
  out->set_depth(c.depth);
  out->set_size_bytes(c.size_bytes);
  out->set_raw_kv_bytes(c.raw_kv_bytes);
  out->set_tier(TierToProto(c.tier));
  out->set_in_dram(c.in_dram);
  out->set_on_disk(c.on_disk);
  out->set_pins(c.pins);
  out->set_holders(c.holders);
  out->set_puts(c.puts);
  out->set_last_access_unix_ms(c.last_access_unix_ms);
  out->set_layers(c.shape.layers);
  out->set_kv_heads(c.shape.kv_heads);
  out->set_tokens(c.shape.tokens);
  out->set_head_dim(c.shape.head_dim);
  out->set_dtype(std::string(DTypeName(c.dtype)));
  out->set_codec_id(c.codec_id);
  out->set_codec_spec(c.codec_spec);
  out->set_flags(c.flags);
  out->set_first_position(c.first_position);
  out->set_header_bytes(c.header_bytes);
  out->set_sections(c.sections);
}

}  // namespace seqkv::rpc
