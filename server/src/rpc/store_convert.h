// Store types -> wire messages (and back for the few request enums). Pure
// functions; the services call them and nothing else converts.
#pragma once

#include "seqkv/server/store.h"
#include "seqkv/v1/seqkv.pb.h"

namespace seqkv::rpc {

v1::Tier TierToProto(server::TierKind tier);
server::TierKind TierFromProto(v1::Tier tier);  // TIER_NONE -> kDisk (the whole store)

void StatsToProto(const server::StoreStats& stats, v1::StatsResponse* out);
void NamespaceInfoToProto(const server::NamespaceInfo& info, v1::NamespaceInfo* out);
void ChunkInfoToProto(const server::ChunkInfo& info, v1::InspectResponse* out);

}  // namespace seqkv::rpc
