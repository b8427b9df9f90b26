// seqkv-server: the single-node seqkv store behind gRPC.
//
// With no arguments it serves 127.0.0.1:50051 with data in ./seqkv-data and
// Prometheus metrics on 127.0.0.1:9464/metrics. Settings come from the
// defaults, then --config FILE (YAML, docs/store.md), then flags. Prints
// machine-readable lines on stdout once ready:
//   listening on HOST:PORT
//   metrics on HOST:PORT
// Logs (spdlog, one key=value line per event) go to stderr. SIGTERM/SIGINT
// stop it gracefully: no new calls, calls in flight get a grace period, then
// the store is closed cleanly.
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>
#include <thread>

#include "rpc/rpc_server.h"
#include "seqkv/server/config.h"
#include "seqkv/server/store.h"

namespace {

using seqkv::Result;
using seqkv::Status;

struct Flags {
  std::string config_file;
  std::string listen;
  std::string metrics_listen;
  std::string data_dir;
  std::string dram_budget;
  std::string disk_budget;
  std::string log_level;
  int max_message_mib = 0;
  int shutdown_grace_ms = 5000;
  bool print_config = false;
};

Result<seqkv::server::ServerConfig> BuildConfig(const Flags& flags, const CLI::App& app) {
  seqkv::server::ServerConfig config;
  if (!flags.config_file.empty()) {
    SEQKV_ASSIGN_OR_RETURN(config, seqkv::server::LoadConfig(flags.config_file));
  }
  if (app.count("--listen")) config.listen = flags.listen;
  if (app.count("--metrics-listen")) config.metrics_listen = flags.metrics_listen;
  if (app.count("--data-dir")) config.store.data_dir = flags.data_dir;
  if (app.count("--log-level")) config.log_level = flags.log_level;
  if (app.count("--dram-budget")) {
    SEQKV_ASSIGN_OR_RETURN(config.store.dram_budget_bytes, seqkv::server::ParseByteSize(flags.dram_budget));
  }
  if (app.count("--disk-budget")) {
    SEQKV_ASSIGN_OR_RETURN(config.store.disk_budget_bytes, seqkv::server::ParseByteSize(flags.disk_budget));
  }
  return config;
}

void SetUpLogging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("seqkv");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("ts=%Y-%m-%dT%H:%M:%S.%e level=%l %v");
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

int Fail(const Status& status, const char* what) {
  spdlog::critical("event=startup_failed step={} error=\"{}\"", what, status.ToString());
  std::fprintf(stderr, "seqkv-server: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"seqkv-server: single-node KV-cache store (gRPC seqkv.v1)"};
  Flags flags;
  app.add_option("--config", flags.config_file, "YAML config file (docs/store.md)")->check(CLI::ExistingFile);
  app.add_option("--listen", flags.listen, "gRPC address HOST:PORT (port 0 = any free port)")
      ->default_str("127.0.0.1:50051");
  app.add_option("--metrics-listen", flags.metrics_listen, "Prometheus /metrics address HOST:PORT (\"\" = off)")
      ->default_str("127.0.0.1:9464");
  app.add_option("--data-dir", flags.data_dir, "data directory")->default_str("./seqkv-data");
  app.add_option("--dram-budget", flags.dram_budget, "DRAM tier budget, e.g. 1GiB");
  app.add_option("--disk-budget", flags.disk_budget, "disk tier budget, e.g. 16GiB");
  app.add_option("--log-level", flags.log_level, "trace|debug|info|warn|error|critical|off")->default_str("info");
  app.add_option("--max-message-mib", flags.max_message_mib, "gRPC message size limit in MiB (default 64)");
  app.add_option("--shutdown-grace-ms", flags.shutdown_grace_ms, "time calls in flight get on shutdown")
      ->default_val(5000);
  app.add_flag("--print-config", flags.print_config, "print the effective configuration as YAML and exit");
  app.set_version_flag("--version", SEQKV_VERSION);
  CLI11_PARSE(app, argc, argv);

  Result<seqkv::server::ServerConfig> config = BuildConfig(flags, app);
  if (!config.ok()) {
    std::fprintf(stderr, "seqkv-server: configuration: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (flags.print_config) {
    std::cout << seqkv::server::ConfigToYaml(*config);
    return 0;
  }
  SetUpLogging(config->log_level);

  // Block the stop signals in every thread (gRPC's included); one thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto registry = std::make_shared<prometheus::Registry>();
  Result<std::unique_ptr<seqkv::server::Store>> store = seqkv::server::Store::Open(config->store, registry.get());
  if (!store.ok()) return Fail(store.status(), "opening the store");

  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address;
  if (!config->metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(config->metrics_listen);
      exposer->RegisterCollectable(registry);
      std::vector<int> ports = exposer->GetListeningPorts();
      metrics_address = config->metrics_listen.substr(0, config->metrics_listen.rfind(':')) + ":" +
                        (ports.empty() ? std::string("?") : std::to_string(ports.front()));
    } catch (const std::exception& e) {
      return Fail(seqkv::Unavailable(std::string("cannot serve metrics on ") + config->metrics_listen + ": " +
                                     e.what()),
                  "starting the metrics endpoint");
    }
  }

  seqkv::rpc::RpcServerOptions rpc_options;
  rpc_options.listen = config->listen;
  if (flags.max_message_mib > 0) rpc_options.max_message_bytes = flags.max_message_mib << 20;
  rpc_options.service.max_chunk_bytes = config->store.max_chunk_bytes;
  rpc_options.admin.data_dir = config->store.data_dir;
  rpc_options.admin.version = SEQKV_VERSION;
  Result<std::unique_ptr<seqkv::rpc::RpcServer>> server =
      seqkv::rpc::RpcServer::Start(rpc_options, store->get(), registry.get());
  if (!server.ok()) return Fail(server.status(), "starting the gRPC server");

  spdlog::info("event=started listen={} metrics={} data_dir={} dram_budget={} disk_budget={}", (*server)->address(),
               metrics_address.empty() ? "off" : metrics_address, config->store.data_dir,
               config->store.dram_budget_bytes, config->store.disk_budget_bytes);
  std::printf("listening on %s\n", (*server)->address().c_str());
  if (!metrics_address.empty()) std::printf("metrics on %s\n", metrics_address.c_str());
  std::fflush(stdout);

  seqkv::rpc::RpcServer* rpc = server->get();
  const auto grace = std::chrono::milliseconds(flags.shutdown_grace_ms);
  std::thread signal_thread([&stop_signals, rpc, grace] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("event=stopping signal={} grace_ms={}", strsignal(signal), grace.count());
    rpc->Shutdown(grace);
  });
  rpc->Wait();
  signal_thread.join();
  server->reset();
  spdlog::info("event=rpc_stopped");
  exposer.reset();
  spdlog::info("event=metrics_stopped");
  store->reset();  // closes RocksDB cleanly
  spdlog::info("event=stopped");
  return 0;
}
