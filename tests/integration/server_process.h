// Test helper: runs the real seqkv-server binary as a child process on
// 127.0.0.1 with an ephemeral port, and scrapes HTTP. Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "seqkv/client/client.h"
#include "seqkv/codec/status.h"

namespace seqkv::test {

struct ServerProcessOptions {
  std::string binary;    // default: the SEQKV_SERVER_BIN compile definition
  std::string data_dir;  // required
  std::vector<std::string> extra_args;
  std::chrono::milliseconds start_timeout{20'000};
};

class ServerProcess {
 public:
  // Starts the server and waits for its "listening on" and "metrics on" lines.
  static Result<std::unique_ptr<ServerProcess>> Start(const ServerProcessOptions& options);
  ~ServerProcess();  // SIGKILL if still running

  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }

  // SIGTERM, then waits up to `timeout`; the exit code, or DeadlineExceeded
  // (the process is then killed).
  Result<int> Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(15'000));
  // SIGKILL and reap.
  void Kill();
  // The tail of the server's stderr log, for failure messages.
  std::string LogTail(size_t bytes = 4000) const;

  // A client connected to this server.
  Result<std::unique_ptr<client::Client>> Connect(client::ClientOptions options = {}) const;

 private:
  ServerProcess() = default;
  bool Reap(std::chrono::milliseconds timeout, int* exit_code);

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  std::string metrics_address_;
  std::string log_path_;
};

// GET http://host:port/path; the body, or Unavailable.
Result<std::string> HttpGet(const std::string& host_port, const std::string& path);
// The value of the first sample line of `text` starting with `series` ("name{labels}").
double MetricValue(const std::string& text, const std::string& series);

}  // namespace seqkv::test
