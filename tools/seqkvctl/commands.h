// Sub-command groups of seqkvctl. Each Register* adds its commands to app;
// the callbacks set *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace seqkv::ctl {

void RegisterCodecCommands(CLI::App& app, int* exit_code);
void RegisterStoreCommands(CLI::App& app, int* exit_code);

}  // namespace seqkv::ctl
