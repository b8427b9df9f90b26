// seqkvctl: the seqkv admin CLI.
#include <CLI/CLI.hpp>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"seqkvctl: admin CLI for the seqkv KV-cache store"};
  app.require_subcommand(1);
  int exit_code = 0;
  seqkv::ctl::RegisterCodecCommands(app, &exit_code);
  seqkv::ctl::RegisterStoreCommands(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
