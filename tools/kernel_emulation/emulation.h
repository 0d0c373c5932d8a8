// The launch side of the host emulation: the shim's globals, and `launch`, which runs a kernel's
// body over a grid one block at a time. A block's threads are fibers on this host thread, run in
// turn, each until it waits at a barrier or returns. On x86-64 a fiber switch is six pushes, a
// stack swap and six pops (below); elsewhere it is ucontext's swapcontext, which also makes a
// system call per switch (several times slower here). Threads that wait at
// different barriers forever (a barrier some threads skip) are reported as a deadlock with
// where each one waits, instead of hanging. Included once, by the harness's main file.
#pragma once
#include "shim.h"
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <cstdint>
#include <ucontext.h>
#include <vector>
EmuLane *emu_current;
dim3_ blockIdx, blockDim, gridDim;
EmuBarrier warp_barriers[MAX_WARPS], block_barrier;
unsigned char warp_slots[MAX_WARPS][2][32][SLOT_BYTES];

namespace emu {
constexpr size_t STACK_BYTES = 256 * 1024;
inline std::vector<EmuLane> lanes;
inline std::vector<std::vector<char>> stacks;
inline std::function<void()> body;

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)  // -DEMU_UCONTEXT: the portable path
// Saves the callee-saved registers on this stack, stores its pointer in *from, and resumes the
// stack `to` (saved by an earlier switch, or prepared by `start`).
extern "C" void emu_switch(void **from, void *to);
asm(R"(
  .text
  .globl emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");
inline void *scheduler;
inline std::vector<void *> saved;
inline void lane_main() {
  body();
  emu_current->done = true;
  emu_switch(&saved[emu_current->idx.x], scheduler);  // never resumed
}
// A fresh stack whose first switch "returns" into lane_main, with the stack aligned as after a call.
inline void start(unsigned i) {
  char *top = emu::stacks[i].data() + STACK_BYTES;
  top -= reinterpret_cast<uintptr_t>(top) % 16;
  void **sp = reinterpret_cast<void **>(top);
  *--sp = nullptr;                                     // lane_main's (unused) return address
  *--sp = reinterpret_cast<void *>(&lane_main);        // where emu_switch's ret goes
  for (int r = 0; r < 6; ++r) *--sp = nullptr;         // rbp, rbx, r12..r15
  saved[i] = sp;
}
inline void resume(unsigned i) { emu_switch(&scheduler, saved[i]); }
inline void yield(unsigned i) { emu_switch(&saved[i], scheduler); }
#else
inline ucontext_t scheduler;
inline std::vector<ucontext_t> saved;
inline void lane_main() {
  body();
  emu_current->done = true;  // uc_link returns to the scheduler
}
inline void start(unsigned i) {
  ucontext_t &c = saved[i];
  getcontext(&c);
  c.uc_stack.ss_sp = stacks[i].data();
  c.uc_stack.ss_size = STACK_BYTES;
  c.uc_link = &scheduler;
  makecontext(&c, lane_main, 0);
}
inline void resume(unsigned i) { swapcontext(&scheduler, &saved[i]); }
inline void yield(unsigned i) { swapcontext(&saved[i], &scheduler); }
#endif
}  // namespace emu

inline void EmuBarrier::arrive_and_wait() {
  if (++arrived == expected) {  // the last one: release the others
    arrived = 0;
    for (EmuLane &l : emu::lanes)
      if (l.blocked == this) l.blocked = nullptr;
    return;
  }
  emu_current->blocked = this;
  emu::yield(emu_current->idx.x);
}

// Runs `body` (the kernel's code, reading threadIdx and blockIdx) for every block of `grid`
// (x, then y), `threads` threads a block: whole warps, at most MAX_WARPS of them.
template <typename F> void launch(dim3_ grid, unsigned threads, F body) {
  if (threads == 0 || threads % 32 != 0 || threads > 32 * MAX_WARPS) std::abort();
  blockDim = {threads, 1, 1};
  gridDim = grid;
  emu::body = body;
  emu::saved.assign(threads, {});
  emu::lanes.assign(threads, EmuLane{});
  emu::stacks.resize(threads);
  for (auto &s : emu::stacks) s.resize(emu::STACK_BYTES);
  for (unsigned by = 0; by < std::max(grid.y, 1u); ++by)
    for (unsigned bx = 0; bx < std::max(grid.x, 1u); ++bx) {
      blockIdx = {bx, by, 0};
      for (unsigned w = 0; w < threads / 32; ++w) warp_barriers[w] = {32, 0};
      block_barrier = {threads, 0};
      for (unsigned i = 0; i < threads; ++i) {
        emu::lanes[i] = EmuLane{{i, 0, 0}};
        emu::start(i);
      }
      for (;;) {
        bool ran = false, left = false;
        for (unsigned i = 0; i < threads; ++i) {
          EmuLane &l = emu::lanes[i];
          if (l.done) continue;
          left = true;
          if (l.blocked) continue;
          emu_current = &l;
          ran = true;
          emu::resume(i);
        }
        if (!left) break;
        if (!ran) {
          fprintf(stderr, "deadlock in block (%u, %u): threads wait at different barriers\n", bx, by);
          auto state = [&](unsigned i) {
            const EmuLane &l = emu::lanes[i];
            return l.done ? "returned" : l.blocked == &block_barrier ? "at __syncthreads" : "at a warp operation";
          };
          for (unsigned i = 0, j; i < threads; i = j) {  // runs of threads in the same state
            for (j = i + 1; j < threads && state(j) == state(i);) ++j;
            fprintf(stderr, "  threads %u..%u: %s\n", i, j - 1, state(i));
          }
          std::exit(2);
        }
      }
    }
  emu_current = nullptr;
}
