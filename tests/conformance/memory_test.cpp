// §5.H with a peer: what registered, fast-registered and windowed memory lets a peer do —
// ranges, rights, tokens, invalidation (local, remote, by read), windows and their
// scenarios (read-only, past the end, invalidated by the owner) — and send-and-invalidate
// (R095-R099, R130, R133-R149), with the statuses of docs/DATAPATH.md.
#include <sys/mman.h>

#include "datapath.hpp"

namespace conformance {
namespace {

// An MDL in the kernel's shape for memory that is not where its virtual address says: its
// virtual range is reserved and inaccessible (PROT_NONE — any access through it faults),
// and its PFN array names pages of `memory` in the order `order` gives (virtual page i is
// memory page order[i]). Only a provider that reaches data through the page frames, and
// uses the virtual address as an index (R131), can work with it.
class ScatteredMdl {
 public:
  ScatteredMdl(const TestBuffer& memory, std::vector<size_t> order, size_t byte_offset,
               size_t length)
      : memory_(memory), order_(std::move(order)), reserved_bytes_(order_.size() * PAGE_SIZE) {
    reserved_ = mmap(nullptr, reserved_bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserved_ == MAP_FAILED) {
      reserved_ = nullptr;
      return;
    }
    address_ = static_cast<unsigned char*>(reserved_) + byte_offset;
    length_ = length;
    mdl_ = IoAllocateMdl(address_, static_cast<ULONG>(length), FALSE, FALSE, nullptr);
    if (mdl_ == nullptr) return;
    PPFN_NUMBER pfn = MmGetMdlPfnArray(mdl_);
    for (size_t i = 0; i < order_.size(); ++i)
      pfn[i] = reinterpret_cast<uintptr_t>(page(i)) >> PAGE_SHIFT;
    mdl_->MdlFlags = static_cast<CSHORT>(mdl_->MdlFlags | MDL_PAGES_LOCKED);
  }
  ~ScatteredMdl() {
    IoFreeMdl(mdl_);
    if (reserved_ != nullptr) munmap(reserved_, reserved_bytes_);
  }
  ScatteredMdl(const ScatteredMdl&) = delete;
  ScatteredMdl& operator=(const ScatteredMdl&) = delete;

  MDL* mdl() const { return mdl_; }
  size_t length() const { return length_; }
  // The region's base: the MDL's virtual address (inaccessible).
  uint64_t address() const { return reinterpret_cast<uintptr_t>(address_); }
  // Where the memory of virtual page i really is.
  unsigned char* page(size_t i) const {
    return memory_.data() + order_[i] * PAGE_SIZE;
  }

 private:
  const TestBuffer& memory_;
  std::vector<size_t> order_;
  size_t reserved_bytes_;
  void* reserved_ = nullptr;
  unsigned char* address_ = nullptr;
  size_t length_ = 0;
  MDL* mdl_ = nullptr;
};

// The LAM storage for up to `pages` pages, and its size in bytes.
struct LamStorage {
  explicit LamStorage(size_t pages) : words(2 + pages) {}
  NDK_LOGICAL_ADDRESS_MAPPING* lam() {
    return reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(words.data());
  }
  ULONG size() const { return static_cast<ULONG>(words.size() * sizeof(uint64_t)); }
  std::vector<uint64_t> words;
};

ULONG LiveLams(NDK_ADAPTER* adapter) {
  SOFTNDK_ADAPTER_DIAGNOSTICS d;
  return QueryDiagnostics(adapter, &d) ? d.LiveLams : 0xFFFFFFFFu;
}

class MemoryTest : public DataPathTest {
 protected:
  // A peer write into (address, token) of this side, polled: its status.
  NTSTATUS PeerWrite(Pair& pair, const PeerRegion& from, uint64_t address, UINT32 token,
                     ULONG length = 16) {
    NTSTATUS posted = peer().Write(pair.p.qp, 77, {{from.id, 0, length}}, address, token);
    if (!NT_SUCCESS(posted)) return posted;
    std::vector<PeerResult> r = peer().Poll(pair.p.icq, 1);
    return r.empty() ? STATUS_PENDING : r[0].status;
  }
  NTSTATUS PeerRead(Pair& pair, const PeerRegion& into, uint64_t address, UINT32 token,
                    ULONG length = 16) {
    NTSTATUS posted = peer().Read(pair.p.qp, 78, {{into.id, 0, length}}, address, token);
    if (!NT_SUCCESS(posted)) return posted;
    std::vector<PeerResult> r = peer().Poll(pair.p.icq, 1);
    return r.empty() ? STATUS_PENDING : r[0].status;
  }
  NTSTATUS LocalStatus(Pair& pair) {
    std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
    return r.empty() ? STATUS_PENDING : r[0].Status;
  }
  NTSTATUS Register(NDK_MR* mr, MDL* mdl, size_t length, ULONG flags) {
    return local()
        .Request("NdkRegisterMr",
                 [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
                   return mr->Dispatch->NdkRegisterMr(mr, mdl, length, flags, cb, ctx);
                 })
        .status;
  }
  // Reads into read sinks: a region registered with NDK_MR_FLAG_RDMA_READ_SINK, a
  // fast-registered page with NDK_OP_FLAG_RDMA_READ_SINK and, with `unflagged`, a region
  // without the flag; every read succeeds and lands (R135).
  void ReadSinks(bool unflagged) {
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
    peer().Fill(theirs, 0, Pattern(48, 135));
    LocalRegion& with_flag =
        Region(PAGE_SIZE, NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_RDMA_READ_SINK);
    LocalRegion& without = Region(PAGE_SIZE, NDK_MR_FLAG_ALLOW_LOCAL_WRITE);
    LocalFast lf = MakeFast(1, false);
    ASSERT_TRUE(lf.ok());
    ASSERT_EQ(
        PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, lf.pages[0].QuadPart,
                         NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_RDMA_READ_SINK),
        STATUS_SUCCESS)
        << "(R135)";
    NDK_SGE fast = SgeAt(lf.pages[0].QuadPart, 16, lf.mr->Dispatch->NdkGetLocalTokenFromMr(lf.mr));
    EXPECT_EQ(PostRead(pair.q, nullptr, {with_flag.Sge(0, 16)}, theirs.address, theirs.remote_token),
              STATUS_SUCCESS);
    if (unflagged) {
      EXPECT_EQ(
          PostRead(pair.q, nullptr, {without.Sge(0, 16)}, theirs.address + 16, theirs.remote_token),
          STATUS_SUCCESS);
    }
    EXPECT_EQ(PostRead(pair.q, nullptr, {fast}, theirs.address + 32, theirs.remote_token),
              STATUS_SUCCESS);
    const size_t n = unflagged ? 4 : 3;  // the fast registration's and the reads'
    std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, n);
    ASSERT_EQ(r.size(), n);
    for (const NDK_RESULT_EX& x : r)
      EXPECT_EQ(x.Status, STATUS_SUCCESS) << ResultText(x) << " (R135)";
    std::vector<uint8_t> expected = Pattern(48, 135);
    EXPECT_EQ(std::memcmp(with_flag.data, expected.data(), 16), 0);
    if (unflagged) {
      EXPECT_EQ(std::memcmp(without.data, expected.data() + 16, 16), 0);
    }
    EXPECT_EQ(std::memcmp(lf.buffer->data(), expected.data() + 32, 16), 0);
  }
  // NdkBuildLAM of `length` bytes of `mdl` into `storage` on the local adapter; with
  // `after_call`, run right after the call returned (before a pending one completes).
  Requested BuildLam(MDL* mdl, size_t length, LamStorage& storage, ULONG* fbo,
                     const std::function<void()>& after_call = {}, bool wait = true) {
    NDK_ADAPTER* a = local().get();
    auto size = std::make_shared<ULONG>(storage.size());
    return local().Request(
        "NdkBuildLAM",
        [&, size](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          NTSTATUS s = a->Dispatch->NdkBuildLAM(a, mdl, length, cb, ctx, storage.lam(), size.get(), fbo);
          if (after_call) after_call();
          return s;
        },
        {}, wait);
  }
  // A fast-register MR of the local side, initialized for `pages` pages, remote access.
  NDK_MR* FastMr(ULONG pages) {
    NDK_MR* mr = local().CreateMr(pd(), true);
    Requested init =
        local().Request("NdkInitializeFastRegisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          return mr->Dispatch->NdkInitializeFastRegisterMr(mr, pages, TRUE, cb, ctx);
        });
    EXPECT_EQ(init.status, STATUS_SUCCESS) << "NdkInitializeFastRegisterMr";
    return mr;
  }
  // Whether `page` (a logical address) can be fast-registered now, i.e. belongs to a live
  // LAM; the registration is invalidated again.
  bool PageMapped(Pair& pair, NDK_MR* mr, LONGLONG page) {
    NDK_LOGICAL_ADDRESS address;
    address.QuadPart = page;
    NTSTATUS s = PostFastRegister(pair.q, nullptr, mr, {address}, 0, PAGE_SIZE, page,
                                  NDK_OP_FLAG_ALLOW_LOCAL_WRITE | NDK_OP_FLAG_SILENT_SUCCESS);
    if (s != STATUS_SUCCESS) return false;
    EXPECT_EQ(PostInvalidate(pair.q, nullptr, H(mr), NDK_OP_FLAG_SILENT_SUCCESS), STATUS_SUCCESS);
    return true;
  }
};

// Points every page frame of `mdl` at `decoy`'s pages and moves its virtual address there:
// what a consumer breaking R132 would do to the chain of a pending request.
void Scribble(MDL* mdl, const TestBuffer& decoy) {
  PPFN_NUMBER pfn = MmGetMdlPfnArray(mdl);
  for (size_t i = 0; i < ADDRESS_AND_SIZE_TO_SPAN_PAGES(MmGetMdlVirtualAddress(mdl), mdl->ByteCount); ++i)
    pfn[i] = (reinterpret_cast<uintptr_t>(decoy.data()) >> PAGE_SHIFT) + i;
  mdl->StartVa = decoy.data();
  mdl->MappedSystemVa = decoy.data();
}

// R130: NdkRegisterMr registers Length bytes from the MDL's first byte — a peer reaches
// exactly those; a chain of virtually contiguous MDLs forms one region; a chain with a gap
// is refused with STATUS_INVALID_PARAMETER.
TEST_P(MemoryTest, R130_TheRegisteredRangeIsWhatPeersReach) {
  ASSERT_NO_FATAL_FAILURE(Start());
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  peer().Fill(theirs, 0, Pattern(64, 130));
  {
    SCOPED_TRACE("Length below the MDL's size");
    TestBuffer buffer(3 * PAGE_SIZE, 100);
    NDK_MR* mr = local().CreateMr(pd(), false);
    ASSERT_EQ(Register(mr, buffer.mdl(), 5000, kMrAll), STATUS_SUCCESS);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    uint64_t base = reinterpret_cast<uintptr_t>(buffer.data());
    UINT32 token = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
    EXPECT_EQ(PeerWrite(pair, theirs, base + 4990, token, 10), STATUS_SUCCESS)
        << "the last bytes (R130)";
    EXPECT_EQ(std::memcmp(buffer.data() + 4990, Pattern(64, 130).data(), 10), 0);
    EXPECT_EQ(PeerWrite(pair, theirs, base + 4995, token, 10), STATUS_REMOTE_RESOURCES)
        << "past Length (R130, docs/DATAPATH.md)";
    local().CloseAndWait(mr);
  }
  {
    SCOPED_TRACE("a contiguous chain of two MDLs");
    TestBuffer buffer(2 * PAGE_SIZE, 0);
    MDL* first = IoAllocateMdl(buffer.data(), PAGE_SIZE, FALSE, FALSE, nullptr);
    MDL* second = IoAllocateMdl(buffer.data() + PAGE_SIZE, PAGE_SIZE, FALSE, FALSE, nullptr);
    ASSERT_TRUE(first != nullptr && second != nullptr);
    MmBuildMdlForNonPagedPool(first);
    MmBuildMdlForNonPagedPool(second);
    first->Next = second;
    NDK_MR* mr = local().CreateMr(pd(), false);
    EXPECT_EQ(Register(mr, first, 2 * PAGE_SIZE, kMrAll), STATUS_SUCCESS) << "(R130)";
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    uint64_t base = reinterpret_cast<uintptr_t>(buffer.data());
    EXPECT_EQ(PeerWrite(pair, theirs, base + PAGE_SIZE - 32,
                        mr->Dispatch->NdkGetRemoteTokenFromMr(mr), 64),
              STATUS_SUCCESS)
        << "across the two MDLs (R130)";
    EXPECT_EQ(std::memcmp(buffer.data() + PAGE_SIZE - 32, Pattern(64, 130).data(), 64), 0);
    local().CloseAndWait(mr);
    first->Next = nullptr;
    IoFreeMdl(first);
    IoFreeMdl(second);
  }
  {
    SCOPED_TRACE("a chain with a gap");
    TestBuffer pages(3 * PAGE_SIZE, 0);  // the first and the third page: a gap between
    MDL* first = IoAllocateMdl(pages.data(), PAGE_SIZE, FALSE, FALSE, nullptr);
    MDL* second = IoAllocateMdl(pages.data() + 2 * PAGE_SIZE, PAGE_SIZE, FALSE, FALSE, nullptr);
    MmBuildMdlForNonPagedPool(first);
    MmBuildMdlForNonPagedPool(second);
    first->Next = second;
    NDK_MR* mr = local().CreateMr(pd(), false);
    EXPECT_EQ(Register(mr, first, 2 * PAGE_SIZE, kMrAll), STATUS_INVALID_PARAMETER) << "(R130)";
    EXPECT_EQ(Register(mr, first, PAGE_SIZE, kMrAll), STATUS_SUCCESS)
        << "the contiguous part alone";
    local().CloseAndWait(mr);
    first->Next = nullptr;
    IoFreeMdl(first);
    IoFreeMdl(second);
  }
}

// R134 with docs/DATAPATH.md: a peer's access needs the matching right of the region:
// STATUS_ACCESS_VIOLATION without it (and the connection ends); a receive into memory
// without local write fails with STATUS_ACCESS_VIOLATION, its send with
// STATUS_CONNECTION_ABORTED.
TEST_P(MemoryTest, R134_AccessNeedsTheRegionsRights) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalRegion& scratch = Region(PAGE_SIZE);
  PeerRegion source = peer().Register(PAGE_SIZE, kMrAll);
  {
    SCOPED_TRACE("local write into a region without remote write");
    PeerRegion readable =
        peer().Register(PAGE_SIZE, NDK_MR_FLAG_ALLOW_LOCAL_WRITE | NDK_MR_FLAG_ALLOW_REMOTE_READ);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    EXPECT_EQ(
        PostRead(pair.q, nullptr, {scratch.Sge(0, 16)}, readable.address, readable.remote_token),
        STATUS_SUCCESS);
    EXPECT_EQ(LocalStatus(pair), STATUS_SUCCESS) << "the right it has (R134)";
    EXPECT_EQ(
        PostWrite(pair.q, nullptr, {scratch.Sge(0, 16)}, readable.address, readable.remote_token),
        STATUS_SUCCESS);
    EXPECT_EQ(LocalStatus(pair), STATUS_ACCESS_VIOLATION) << "(R134)";
    ExpectTerminated(pair, STATUS_ACCESS_VIOLATION, scratch, source);
  }
  {
    SCOPED_TRACE("local read from a region without remote read");
    PeerRegion writable = peer().Register(PAGE_SIZE, NDK_MR_FLAG_ALLOW_REMOTE_WRITE);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    EXPECT_EQ(
        PostWrite(pair.q, nullptr, {scratch.Sge(0, 16)}, writable.address, writable.remote_token),
        STATUS_SUCCESS);
    EXPECT_EQ(LocalStatus(pair), STATUS_SUCCESS);
    EXPECT_EQ(
        PostRead(pair.q, nullptr, {scratch.Sge(0, 16)}, writable.address, writable.remote_token),
        STATUS_SUCCESS);
    EXPECT_EQ(LocalStatus(pair), STATUS_ACCESS_VIOLATION) << "(R134)";
    ExpectTerminated(pair, STATUS_ACCESS_VIOLATION, scratch, source);
  }
  {
    SCOPED_TRACE("the peer writes into a local region without remote write");
    LocalRegion& local_only = Region(PAGE_SIZE, NDK_MR_FLAG_ALLOW_LOCAL_WRITE);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    EXPECT_EQ(PeerWrite(pair, source, local_only.address(), local_only.remote_token),
              STATUS_ACCESS_VIOLATION)
        << "(R134)";
    EXPECT_TRUE(pair.link.disconnects->WaitCount(1))
        << "this side learns of the end (docs/DATAPATH.md)";
    EXPECT_EQ(static_cast<NTSTATUS>(pair.link.disconnects->reason.load()), STATUS_ACCESS_VIOLATION)
        << "(R170)";
  }
  {
    SCOPED_TRACE("a receive into a region without local write");
    LocalRegion& read_only = Region(PAGE_SIZE, NDK_MR_FLAG_ALLOW_REMOTE_READ);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(PostReceive(pair.q, reinterpret_cast<PVOID>(1), {read_only.Sge(0, 64)}),
              STATUS_SUCCESS);
    ASSERT_EQ(peer().Send(pair.p.qp, 5, {{source.id, 0, 16}}), STATUS_SUCCESS);
    std::vector<NDK_RESULT_EX> r = Poll(pair.q.rcq, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].Status, STATUS_ACCESS_VIOLATION) << "the receive (R134, docs/DATAPATH.md)";
    std::vector<PeerResult> sent = peer().Poll(pair.p.icq, 1);
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].status, STATUS_CONNECTION_ABORTED) << "the send (docs/DATAPATH.md)";
  }
}

// Reads into read sinks: a region registered with NDK_MR_FLAG_RDMA_READ_SINK, a
// fast-registered page with NDK_OP_FLAG_RDMA_READ_SINK and, with `unflagged`, a region
// without the flag; every read succeeds and lands (R135).
// R135 (adapters advertising RDMA_READ_SINK_NOT_REQUIRED): the read-sink flags never make a
// request fail, and a sink without them works too.
TEST_P(MemoryTest, R135_ReadSinkFlagsNeverFail) {
  ASSERT_NO_FATAL_FAILURE(Start());
  if (!BothHave(NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED))
    GTEST_SKIP()
        << "needs NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED (then the sink flags are required)";
  ASSERT_NO_FATAL_FAILURE(ReadSinks(/*unflagged=*/true));
}

// R135, R212: an adapter without RDMA_READ_SINK_NOT_REQUIRED (SoftNDK: the
// withheld_capabilities tunable) does not advertise it; a consumer then marks its read sinks
// with the sink flags, and those reads work.
TEST_P(MemoryTest, R135_R212_ReadSinksWithoutTheCapability) {
  ASSERT_NO_FATAL_FAILURE(Start({{"withheld_capabilities", "rdma_read_sink_not_required"}}));
  if (BothHave(NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED))
    GTEST_SKIP() << "this provider cannot withhold RDMA_READ_SINK_NOT_REQUIRED";
  EXPECT_EQ(local().info().AdapterFlags & NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED, 0u)
      << "not advertised (R212)";
  ASSERT_NO_FATAL_FAILURE(ReadSinks(/*unflagged=*/false));
}

// R136, R138: tokens are valid once the registration completed; after NdkDeregisterMr they
// grant nothing; the MR may be registered again, with tokens that work.
TEST_P(MemoryTest, R136_R138_DeregisteredTokensGrantNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  PeerRegion source = peer().Register(PAGE_SIZE, kMrAll);
  TestBuffer buffer(PAGE_SIZE, 0);
  NDK_MR* mr = local().CreateMr(pd(), false);
  ASSERT_EQ(Register(mr, buffer.mdl(), PAGE_SIZE, kMrAll), STATUS_SUCCESS);
  UINT32 token = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
  EXPECT_NE(mr->Dispatch->NdkGetLocalTokenFromMr(mr), 0u) << "(R138)";
  uint64_t base = reinterpret_cast<uintptr_t>(buffer.data());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(PeerWrite(pair, source, base, token), STATUS_SUCCESS)
      << "usable once registered (R138)";
  Requested deregistered =
      local().Request("NdkDeregisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return mr->Dispatch->NdkDeregisterMr(mr, cb, ctx);
      });
  ASSERT_EQ(deregistered.status, STATUS_SUCCESS) << "(R136)";
  EXPECT_EQ(PeerWrite(pair, source, base, token), STATUS_ACCESS_VIOLATION)
      << "the old token (R136)";
  ASSERT_EQ(Register(mr, buffer.mdl(), PAGE_SIZE, kMrAll), STATUS_SUCCESS)
      << "registered again (R136)";
  Pair again = MakePair();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(PeerWrite(again, source, base, mr->Dispatch->NdkGetRemoteTokenFromMr(mr)),
            STATUS_SUCCESS)
      << "(R136, R138)";
  local().CloseAndWait(mr);
}

// R139: NdkInitializeFastRegisterMr beyond FRMRPageCount fails with
// STATUS_IMPLEMENTATION_LIMIT; at the limit it succeeds and a fast registration of that
// many pages works; more pages than initialized do not.
TEST_P(MemoryTest, R139_FastRegisterPageLimits) {
  ASSERT_NO_FATAL_FAILURE(Start({{"frmr_page_count", "4"}}));
  ASSERT_EQ(local().info().FRMRPageCount, 4u);
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  NDK_MR* big = local().CreateMr(pd(), true);
  Requested over = local().Request(
      "NdkInitializeFastRegisterMr(5)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return big->Dispatch->NdkInitializeFastRegisterMr(big, 5, TRUE, cb, ctx);
      });
  EXPECT_EQ(over.status, STATUS_IMPLEMENTATION_LIMIT) << "(R139)";
  LocalFast lf = MakeFast(4, true, 6);
  ASSERT_TRUE(lf.ok());
  std::vector<NDK_LOGICAL_ADDRESS> four(lf.pages.begin(), lf.pages.begin() + 4);
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, four, 0, 4 * PAGE_SIZE, four[0].QuadPart,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_SUCCESS)
      << "(R139)";
  LocalFast two = MakeFast(2, true, 3);
  std::vector<NDK_LOGICAL_ADDRESS> three(two.pages.begin(), two.pages.begin() + 3);
  NTSTATUS s = PostFastRegister(pair.q, nullptr, two.mr, three, 0, 3 * PAGE_SIZE, three[0].QuadPart,
                                NDK_OP_FLAG_ALLOW_LOCAL_WRITE);
  EXPECT_FALSE(NT_SUCCESS(s)) << "three pages on an MR initialized for two (R139): "
                              << StatusText(s);
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].Status, STATUS_SUCCESS);
  ExpectNoResults(pair.q.icq, "(R076)");
}

// R140: FastRegister with remote rights on an MR initialized without remote access fails
// inline with STATUS_ACCESS_VIOLATION; local rights are fine.
TEST_P(MemoryTest, R140_RemoteRightsNeedRemoteAccess) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalFast lf = MakeFast(1, /*remote_access=*/false);
  ASSERT_TRUE(lf.ok());
  uint64_t base = lf.pages[0].QuadPart;
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, base,
                             NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_ACCESS_VIOLATION)
      << "(R140)";
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, base,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_ACCESS_VIOLATION)
      << "(R140)";
  ExpectNoResults(pair.q.icq, "inline failures (R076)");
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, base,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE),
            STATUS_SUCCESS)
      << "(R140)";
  EXPECT_EQ(LocalStatus(pair), STATUS_SUCCESS);
}

// R141, R142, R143, R144: fast registration over pages that need not be adjacent, starting
// FBO bytes into the first; Length and BaseVirtualAddress are checked; each registration
// gives new tokens, and the old ones grant nothing.
TEST_P(MemoryTest, R141_R142_R143_R144_FastRegisteredPages) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalFast lf = MakeFast(2, true, 4);
  ASSERT_TRUE(lf.ok());
  const ULONG fbo = 100;
  const size_t length = 2 * PAGE_SIZE - fbo;
  std::vector<NDK_LOGICAL_ADDRESS> apart = {lf.pages[0], lf.pages[2]};  // not adjacent (R141)
  const uint64_t base = 0x40000000ull + fbo;  // an index, FBO into a page (R143)
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, apart, fbo, length + 1, base,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_INVALID_PARAMETER)
      << "Length > pages x PAGE_SIZE - FBO (R142)";
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, apart, fbo, length, base + 1,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_INVALID_PARAMETER)
      << "BaseVirtualAddress % PAGE_SIZE != FBO (R143)";
  UINT32 before = lf.mr->Dispatch->NdkGetRemoteTokenFromMr(lf.mr);
  ASSERT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, apart, fbo, length, base,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE | NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  ASSERT_EQ(LocalStatus(pair), STATUS_SUCCESS);
  UINT32 token = lf.mr->Dispatch->NdkGetRemoteTokenFromMr(lf.mr);
  EXPECT_NE(token, before) << "a new token per registration (R144)";
  std::vector<uint8_t> bytes = Pattern(length, 141);
  PeerRegion theirs = peer().Register(2 * PAGE_SIZE, kMrAll);
  peer().Fill(theirs, 0, bytes);
  EXPECT_EQ(PeerWrite(pair, theirs, base, token, static_cast<ULONG>(length)), STATUS_SUCCESS)
      << "(R141, R144)";
  unsigned char* memory = lf.buffer->data();
  EXPECT_EQ(std::memcmp(memory + fbo, bytes.data(), PAGE_SIZE - fbo), 0)
      << "the first page from FBO (R142)";
  EXPECT_EQ(std::memcmp(memory + 2 * PAGE_SIZE, bytes.data() + PAGE_SIZE - fbo, PAGE_SIZE), 0)
      << "then the third page of the LAM (R141)";
  EXPECT_EQ(memory[PAGE_SIZE], 0) << "the skipped page is untouched (R141)";
  EXPECT_EQ(PeerRead(pair, theirs, base + 10, token, 5000), STATUS_SUCCESS);
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 5000),
            std::vector<uint8_t>(bytes.begin() + 10, bytes.begin() + 5010));
  // Invalidated and registered again at BaseVirtualAddress 0 (legal with FBO 0, R143): a new
  // token; the old one names nothing any more (R144).
  ASSERT_EQ(PostInvalidate(pair.q, nullptr, H(lf.mr)), STATUS_SUCCESS);
  ASSERT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[1]}, 0, PAGE_SIZE, 0,
                             NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_SUCCESS)
      << "BaseVirtualAddress 0 with FBO 0 (R143)";
  std::vector<NDK_RESULT_EX> r = Poll(pair.q.icq, 2);
  ASSERT_EQ(r.size(), 2u);
  UINT32 fresh = lf.mr->Dispatch->NdkGetRemoteTokenFromMr(lf.mr);
  EXPECT_NE(fresh, token) << "(R144)";
  EXPECT_EQ(PeerWrite(pair, theirs, 64, fresh, 16), STATUS_SUCCESS)
      << "base 0 is an index (R133, R143)";
  EXPECT_EQ(std::memcmp(memory + PAGE_SIZE + 64, bytes.data() + 10, 16), 0)
      << "what the read brought back";
  EXPECT_EQ(PeerWrite(pair, theirs, base, token, 16), STATUS_ACCESS_VIOLATION)
      << "the old token (R144, R145)";
}

// R145: after NdkInvalidate a fast-registered region's or a window's token grants nothing;
// invalidating again fails with STATUS_INVALID_DEVICE_STATE.
TEST_P(MemoryTest, R145_InvalidatedRegionsAndWindowsGrantNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  {
    SCOPED_TRACE("fast-registered region");
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    LocalFast lf = MakeFast(1, true);
    uint64_t base = lf.pages[0].QuadPart;
    ASSERT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE, base,
                               NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
              STATUS_SUCCESS);
    UINT32 token = lf.mr->Dispatch->NdkGetRemoteTokenFromMr(lf.mr);
    EXPECT_EQ(PeerWrite(pair, theirs, base, token), STATUS_SUCCESS);
    ASSERT_EQ(PostInvalidate(pair.q, nullptr, H(lf.mr)), STATUS_SUCCESS);
    EXPECT_EQ(PostInvalidate(pair.q, nullptr, H(lf.mr)), STATUS_INVALID_DEVICE_STATE) << "(R145)";
    EXPECT_EQ(Poll(pair.q.icq, 2).size(), 2u);
    EXPECT_EQ(PeerWrite(pair, theirs, base, token), STATUS_ACCESS_VIOLATION) << "(R145)";
  }
  {
    SCOPED_TRACE("window");
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    LocalRegion& mine = Region(2 * PAGE_SIZE);
    NDK_MW* mw = local().CreateMw(pd());
    ASSERT_EQ(PostBind(pair.q, nullptr, mine.mr, mw, mine.address(PAGE_SIZE), PAGE_SIZE,
                       NDK_OP_FLAG_ALLOW_REMOTE_READ),
              STATUS_SUCCESS);
    UINT32 token = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
    EXPECT_EQ(PeerRead(pair, theirs, mine.address(PAGE_SIZE), token), STATUS_SUCCESS);
    ASSERT_EQ(PostInvalidate(pair.q, nullptr, H(mw)), STATUS_SUCCESS);
    EXPECT_EQ(PostInvalidate(pair.q, nullptr, H(mw)), STATUS_INVALID_DEVICE_STATE) << "(R145)";
    EXPECT_EQ(Poll(pair.q.icq, 2).size(), 2u);
    EXPECT_EQ(PeerRead(pair, theirs, mine.address(PAGE_SIZE), token), STATUS_ACCESS_VIOLATION)
        << "(R145)";
  }
}

// R146, R147, R148: a window lies inside its region; write rights need a region with local
// write; the window's token works as soon as NdkBind returns, and each bind gives a new one.
TEST_P(MemoryTest, R146_R147_R148_WindowRangeRightsAndToken) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(4 * PAGE_SIZE);
  std::vector<uint8_t> bytes = Pattern(4 * PAGE_SIZE, 146);
  std::memcpy(mine.data, bytes.data(), bytes.size());
  LocalRegion& read_only = Region(PAGE_SIZE, NDK_MR_FLAG_ALLOW_REMOTE_READ);
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_NE(mw, nullptr);
  EXPECT_EQ(PostBind(pair.q, nullptr, mine.mr, mw, mine.address(3 * PAGE_SIZE), 2 * PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_INVALID_PARAMETER)
      << "past the region (R146)";
  EXPECT_EQ(PostBind(pair.q, nullptr, mine.mr, mw, mine.address() - PAGE_SIZE, 2 * PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_INVALID_PARAMETER)
      << "before the region (R146)";
  EXPECT_EQ(PostBind(pair.q, nullptr, read_only.mr, mw, read_only.address(), PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_ACCESS_VIOLATION)
      << "write rights on a region without local write (R147)";
  ExpectNoResults(pair.q.icq, "inline failures (R076)");
  UINT32 previous = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
  ASSERT_EQ(PostBind(pair.q, nullptr, mine.mr, mw, mine.address(PAGE_SIZE), PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS)
      << "(R146)";
  UINT32 token = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);  // right after NdkBind returned
  EXPECT_NE(token, previous) << "a new token per bind (docs/DATAPATH.md)";
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  EXPECT_EQ(PeerRead(pair, theirs, mine.address(PAGE_SIZE) + 100, token, 200), STATUS_SUCCESS)
      << "(R148)";
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 200),
            std::vector<uint8_t>(bytes.begin() + PAGE_SIZE + 100, bytes.begin() + PAGE_SIZE + 300));
  ASSERT_EQ(PostBind(pair.q, nullptr, read_only.mr, mw, read_only.address(), PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS)
      << "read rights on a read-only region (R147)";
  EXPECT_NE(mw->Dispatch->NdkGetRemoteTokenFromMw(mw), token) << "rebound: a new token";
  EXPECT_EQ(Poll(pair.q.icq, 2).size(), 2u);
}

// R149: a region with a window bound cannot be deregistered, and its close stays pending
// until the window is closed.
TEST_P(MemoryTest, R149_RegionCloseWaitsForItsWindow) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  TestBuffer buffer(PAGE_SIZE, 0);
  NDK_MR* mr = local().CreateMr(pd(), false);
  ASSERT_EQ(Register(mr, buffer.mdl(), PAGE_SIZE, kMrAll), STATUS_SUCCESS);
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_EQ(PostBind(pair.q, nullptr, mr, mw, reinterpret_cast<uintptr_t>(buffer.data()), PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  Requested deregister =
      local().Request("NdkDeregisterMr", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return mr->Dispatch->NdkDeregisterMr(mr, cb, ctx);
      });
  EXPECT_EQ(deregister.status, STATUS_INVALID_DEVICE_STATE)
      << "a window is bound (docs/DATAPATH.md)";
  Completion* close = local().StartClose(mr);
  ASSERT_NE(close, nullptr);
  EXPECT_EQ(close->call_status(), STATUS_PENDING) << "(R049, R149)";
  std::this_thread::sleep_for(kSettle);
  EXPECT_FALSE(TestAdapter::CloseDone(close)) << "(R149)";
  local().CloseAndWait(mw);
  EXPECT_TRUE(TestAdapter::WaitCloseDone(close)) << "(R149)";
}

// Window scenarios (docs/DATAPATH.md): a write into a read-only window fails with
// STATUS_ACCESS_VIOLATION; an access past a window's end (inside its region) with
// STATUS_REMOTE_RESOURCES; an access through a window its owner invalidated with
// STATUS_ACCESS_VIOLATION. Each ends the connection.
TEST_P(MemoryTest, R134_R145_R146_WindowScenarios) {
  ASSERT_NO_FATAL_FAILURE(Start());
  LocalRegion& mine = Region(4 * PAGE_SIZE);
  PeerRegion theirs = peer().Register(2 * PAGE_SIZE, kMrAll);
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_NE(mw, nullptr);
  const uint64_t window = mine.address(PAGE_SIZE);
  struct Case {
    const char* what;
    bool write;
    uint64_t offset;
    ULONG length;
    bool invalidate_first;
    NTSTATUS expected;
  };
  const Case cases[] = {
      {"a write into a read-only window", true, 0, 16, false, STATUS_ACCESS_VIOLATION},
      {"a read past the window's end", false, PAGE_SIZE - 8, 16, false, STATUS_REMOTE_RESOURCES},
      {"a read through a window its owner invalidated", false, 0, 16, true,
       STATUS_ACCESS_VIOLATION},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Pair pair = MakePair();
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(
        PostBind(pair.q, nullptr, mine.mr, mw, window, PAGE_SIZE, NDK_OP_FLAG_ALLOW_REMOTE_READ),
        STATUS_SUCCESS);
    UINT32 token = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
    EXPECT_EQ(PeerRead(pair, theirs, window, token, 16), STATUS_SUCCESS) << "the window works";
    if (c.invalidate_first) {
      ASSERT_EQ(PostInvalidate(pair.q, nullptr, H(mw)), STATUS_SUCCESS);
    }
    NTSTATUS s = c.write ? PeerWrite(pair, theirs, window + c.offset, token, c.length)
                         : PeerRead(pair, theirs, window + c.offset, token, c.length);
    EXPECT_EQ(s, c.expected) << c.what;
    EXPECT_TRUE(pair.link.disconnects->WaitCount(1)) << "the connection ends (docs/DATAPATH.md)";
    EXPECT_EQ(static_cast<NTSTATUS>(pair.link.disconnects->reason.load()), c.expected) << "(R170)";
    Drain(pair.q.icq);
  }
}

// R095, R096, R097, R098, R104: NdkSendAndInvalidate. The sender's entry is a Send; the
// receiver's token (a fast-registered region or a window of its PD) is invalidated before
// its receive completes, which NdkGetCqResultsEx reports as ReceiveAndInvalidate with the
// token, NdkGetCqResults as a plain result; a local NdkInvalidate of it then fails.
TEST_P(MemoryTest, R095_R096_R097_R098_SendAndInvalidate) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(2 * PAGE_SIZE, kMrAll);
  {
    SCOPED_TRACE("the peer's fast-registered region, NdkGetCqResultsEx");
    PeerRegion fast = peer().CreateFastRegion(1, true);
    ASSERT_EQ(peer().FastRegister(pair.p.qp, fast, PAGE_SIZE, 0, NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
              STATUS_SUCCESS);
    ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
    ASSERT_EQ(PostWrite(pair.q, nullptr, {mine.Sge(0, 16)}, fast.address, fast.remote_token),
              STATUS_SUCCESS);
    ASSERT_EQ(LocalStatus(pair), STATUS_SUCCESS);
    ASSERT_EQ(peer().Receive(pair.p.qp, 95, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
    ASSERT_EQ(
        PostSendInvalidate(pair.q, reinterpret_cast<PVOID>(1), {mine.Sge(0, 8)}, fast.remote_token),
        STATUS_SUCCESS);
    std::vector<NDK_RESULT_EX> sent = Poll(pair.q.icq, 1);
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].Status, STATUS_SUCCESS);
    EXPECT_EQ(sent[0].Type, NdkOperationTypeSend) << "(R095, R104)";
    std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].status, STATUS_SUCCESS);
    EXPECT_EQ(got[0].type, static_cast<ULONG>(NdkOperationTypeReceiveAndInvalidate)) << "(R096)";
    EXPECT_EQ(got[0].type_specific, fast.remote_token) << "(R096)";
    EXPECT_EQ(got[0].bytes, 8u);
    EXPECT_EQ(peer().Invalidate(pair.p.qp, fast.id), STATUS_INVALID_DEVICE_STATE) << "(R098)";
  }
  {
    SCOPED_TRACE("the peer's window, NdkGetCqResults");
    PeerId mw = peer().CreateMw();
    UINT32 token = 0;
    ASSERT_EQ(peer().Bind(pair.p.qp, theirs, mw, PAGE_SIZE, PAGE_SIZE,
                          NDK_OP_FLAG_ALLOW_REMOTE_READ, &token),
              STATUS_SUCCESS);
    ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
    ASSERT_EQ(peer().Receive(pair.p.qp, 97, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
    ASSERT_EQ(PostSendInvalidate(pair.q, nullptr, {mine.Sge(0, 8)}, token), STATUS_SUCCESS);
    ASSERT_EQ(LocalStatus(pair), STATUS_SUCCESS);
    std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 1, 8, kWait, /*ex=*/false);
    ASSERT_EQ(got.size(), 1u) << "retrievable through NdkGetCqResults (R097)";
    EXPECT_EQ(got[0].status, STATUS_SUCCESS);
    EXPECT_EQ(got[0].request_context, 97u);
    EXPECT_EQ(peer().Invalidate(pair.p.qp, mw), STATUS_INVALID_DEVICE_STATE)
        << "invalidated all the same (R097, R098)";
  }
  {
    SCOPED_TRACE("this side's fast-registered region");
    LocalFast lf = MakeFast(1, true);
    ASSERT_EQ(PostFastRegister(pair.q, nullptr, lf.mr, {lf.pages[0]}, 0, PAGE_SIZE,
                               lf.pages[0].QuadPart, NDK_OP_FLAG_ALLOW_REMOTE_READ),
              STATUS_SUCCESS);
    ASSERT_EQ(LocalStatus(pair), STATUS_SUCCESS);
    UINT32 token = lf.mr->Dispatch->NdkGetRemoteTokenFromMr(lf.mr);
    ASSERT_EQ(PostReceive(pair.q, reinterpret_cast<PVOID>(96), {mine.Sge(0, 64)}), STATUS_SUCCESS);
    ASSERT_EQ(peer().SendAndInvalidate(pair.p.qp, 0, {{theirs.id, 0, 8}}, token), STATUS_SUCCESS);
    std::vector<PeerResult> sent = peer().Poll(pair.p.icq, 1);
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].type, static_cast<ULONG>(NdkOperationTypeSend)) << "(R095)";
    std::vector<NDK_RESULT_EX> got = Poll(pair.q.rcq, 1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].Status, STATUS_SUCCESS);
    EXPECT_EQ(got[0].Type, NdkOperationTypeReceiveAndInvalidate) << "(R096)";
    EXPECT_EQ(got[0].TypeSpecificCompletionOutput, token) << "(R096)";
    EXPECT_EQ(PostInvalidate(pair.q, nullptr, H(lf.mr)), STATUS_INVALID_DEVICE_STATE) << "(R098)";
    // The token grants nothing now; the peer's read ends the connection.
    EXPECT_EQ(PeerRead(pair, theirs, lf.pages[0].QuadPart, token), STATUS_ACCESS_VIOLATION)
        << "(R096)";
  }
}

// R099 with docs/DATAPATH.md: a send-and-invalidate naming a token that cannot be
// invalidated (a registered region's) fails the receive and the send with
// STATUS_ACCESS_VIOLATION and ends the connection.
TEST_P(MemoryTest, R099_SendAndInvalidateOfAnInvalidTokenAbortsTheConnection) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  ASSERT_EQ(peer().Receive(pair.p.qp, 99, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(peer().Receive(pair.p.qp, 100, {{theirs.id, 64, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(PostSendInvalidate(pair.q, nullptr, {mine.Sge(0, 8)}, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(LocalStatus(pair), STATUS_ACCESS_VIOLATION) << "the send (R099, docs/DATAPATH.md)";
  std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].status, STATUS_ACCESS_VIOLATION) << "the receive (R099)";
  EXPECT_EQ(got[1].status, STATUS_CANCELLED) << "the other outstanding receive (docs/DATAPATH.md)";
  ExpectTerminated(pair, STATUS_ACCESS_VIOLATION, mine, theirs);
}

// R151, R155: NdkBuildLAM maps every page the range touches (page-aligned PAGE_SIZE pages,
// *pFBO the offset into the first), refuses a chain that is not virtually contiguous, and
// NdkReleaseLAM leaves the MDL exactly as it was.
TEST_P(MemoryTest, R151_R155_LamPagesAndRelease) {
  ASSERT_NO_FATAL_FAILURE(Start());
  NDK_ADAPTER* a = local().get();
  TestBuffer buffer(3 * PAGE_SIZE + 500, 300);
  MDL before = *buffer.mdl();
  std::vector<uint64_t> storage(16);
  auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(storage.data());
  ULONG size = static_cast<ULONG>(storage.size() * sizeof(uint64_t)), fbo = 0;
  Requested built = local().Request("NdkBuildLAM", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return a->Dispatch->NdkBuildLAM(a, buffer.mdl(), buffer.length(), cb, ctx, lam, &size, &fbo);
  });
  ASSERT_EQ(built.status, STATUS_SUCCESS);
  EXPECT_EQ(fbo, 300u) << "(R151)";
  ASSERT_EQ(lam->AdapterPageCount, 4u) << "300 + 3 pages + 500 bytes touch four pages (R151)";
  uint64_t first = reinterpret_cast<uintptr_t>(buffer.data()) - 300;
  for (ULONG i = 0; i < lam->AdapterPageCount; ++i) {
    EXPECT_EQ(lam->AdapterPageArray[i].QuadPart % PAGE_SIZE, 0) << "page-aligned (R151)";
    EXPECT_EQ(static_cast<uint64_t>(lam->AdapterPageArray[i].QuadPart), first + i * PAGE_SIZE)
        << "(R151, R154)";
  }
  a->Dispatch->NdkReleaseLAM(a, lam);
  const MDL& after = *buffer.mdl();
  EXPECT_EQ(after.Next, before.Next) << "(R155)";
  EXPECT_EQ(after.MdlFlags, before.MdlFlags) << "(R155)";
  EXPECT_EQ(after.StartVa, before.StartVa) << "(R155)";
  EXPECT_EQ(after.MappedSystemVa, before.MappedSystemVa) << "(R155)";
  EXPECT_EQ(after.ByteCount, before.ByteCount) << "(R155)";
  EXPECT_EQ(after.ByteOffset, before.ByteOffset) << "(R155)";
  TestBuffer pages(3 * PAGE_SIZE, 0);  // the first and the third page: a gap between
  MDL* m1 = IoAllocateMdl(pages.data(), PAGE_SIZE, FALSE, FALSE, nullptr);
  MDL* m2 = IoAllocateMdl(pages.data() + 2 * PAGE_SIZE, PAGE_SIZE, FALSE, FALSE, nullptr);
  MmBuildMdlForNonPagedPool(m1);
  MmBuildMdlForNonPagedPool(m2);
  m1->Next = m2;
  size = static_cast<ULONG>(storage.size() * sizeof(uint64_t));
  Requested refused =
      local().Request("NdkBuildLAM(gap)", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
        return a->Dispatch->NdkBuildLAM(a, m1, 2 * PAGE_SIZE, cb, ctx, lam, &size, &fbo);
      });
  EXPECT_EQ(refused.status, STATUS_INVALID_PARAMETER) << "not virtually contiguous (R151)";
  m1->Next = nullptr;
  IoFreeMdl(m1);
  IoFreeMdl(m2);
}

// R153, R157: an NdkBuildLAM that fails (out of resources, injected) reports it inline or
// through its callback and leaves no mapping behind — its pages cannot be fast-registered;
// a LAM the consumer still holds when its adapter closes does not keep the close waiting.
TEST_P(MemoryTest, R153_R157_LamFailureAndLamHeldAtAdapterClose) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  NDK_ADAPTER* a = local().get();
  TestBuffer buffer(2 * PAGE_SIZE, 0);
  std::vector<uint64_t> storage(8);
  auto* lam = reinterpret_cast<NDK_LOGICAL_ADDRESS_MAPPING*>(storage.data());
  ULONG size = static_cast<ULONG>(storage.size() * sizeof(uint64_t)), fbo = 0;
  ASSERT_EQ(SoftNdkInjectFault(a, SOFTNDK_FAULT_REQUEST, STATUS_INSUFFICIENT_RESOURCES, 1),
            STATUS_SUCCESS);
  Requested failed = local().Request("NdkBuildLAM (no resources)", [&](NDK_FN_REQUEST_COMPLETION cb,
                                                                       PVOID ctx) {
    return a->Dispatch->NdkBuildLAM(a, buffer.mdl(), buffer.length(), cb, ctx, lam, &size, &fbo);
  });
  EXPECT_EQ(failed.status, STATUS_INSUFFICIENT_RESOURCES) << "inline or asynchronous (R153)";
  NDK_MR* mr = FastMr(2);
  NDK_LOGICAL_ADDRESS page;
  page.QuadPart = static_cast<LONGLONG>(reinterpret_cast<uintptr_t>(buffer.data()));
  EXPECT_EQ(PostFastRegister(pair.q, nullptr, mr, {page}, 0, PAGE_SIZE, page.QuadPart,
                             NDK_OP_FLAG_ALLOW_LOCAL_WRITE),
            STATUS_ACCESS_VIOLATION)
      << "no mapping survived the failure (R153)";
  // A second adapter closes with a LAM still built on it (R157).
  TestAdapter* other = OpenAdapter();
  ASSERT_NE(other, nullptr);
  NDK_ADAPTER* b = other->get();
  size = static_cast<ULONG>(storage.size() * sizeof(uint64_t));
  Requested built = other->Request("NdkBuildLAM", [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
    return b->Dispatch->NdkBuildLAM(b, buffer.mdl(), buffer.length(), cb, ctx, lam, &size, &fbo);
  });
  ASSERT_EQ(built.status, STATUS_SUCCESS);
  other->CloseEverything();
  EXPECT_TRUE(other->CloseAdapter()) << "the adapter close does not wait for a LAM (R157)";
  other->VerifyCallbackCounts();
}

// R131: the region's base virtual address is only an index. The MDL's virtual range is
// inaccessible and its page frames name three pages of another buffer in scrambled order:
// a peer's write and read, a local SGE, a window bound at an address inside the region and
// a LAM all reach, for base + offset, the page the PFN array names for that offset, at the
// same offset within the page.
TEST_P(MemoryTest, R131_BaseAddressIsOnlyAnIndex) {
  ASSERT_NO_FATAL_FAILURE(Start());
  TestBuffer memory(3 * PAGE_SIZE, 0);
  std::memset(memory.data(), 0, 3 * PAGE_SIZE);
  const size_t offset = 0x234;
  ScatteredMdl described(memory, {2, 0, 1}, offset, 3 * PAGE_SIZE - offset - 100);
  ASSERT_NE(described.mdl(), nullptr);
  NDK_MR* mr = local().CreateMr(pd(), false);
  ASSERT_EQ(Register(mr, described.mdl(), described.length(), kMrAll), STATUS_SUCCESS) << "(R131)";
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::vector<uint8_t> pattern = Pattern(64, 131);
  peer().Fill(theirs, 0, pattern);
  const uint64_t base = described.address();
  const uint64_t second_page = base + PAGE_SIZE - offset;  // first byte of virtual page 1
  const UINT32 remote = mr->Dispatch->NdkGetRemoteTokenFromMr(mr);
  const UINT32 local_token = mr->Dispatch->NdkGetLocalTokenFromMr(mr);

  // A peer's write across the end of virtual page 0: half at the end of the page named
  // first, half at the start of the page named second.
  EXPECT_EQ(PeerWrite(pair, theirs, second_page - 32, remote, 64), STATUS_SUCCESS) << "(R131)";
  EXPECT_EQ(std::memcmp(described.page(0) + PAGE_SIZE - 32, pattern.data(), 32), 0) << "(R131)";
  EXPECT_EQ(std::memcmp(described.page(1), pattern.data() + 32, 32), 0) << "(R131)";
  // A peer's read in virtual page 2 gets the bytes of the page named third.
  std::vector<uint8_t> third = Pattern(48, 31);
  std::memcpy(described.page(2) + 100, third.data(), third.size());
  EXPECT_EQ(PeerRead(pair, theirs, second_page + PAGE_SIZE + 100, remote, 48), STATUS_SUCCESS)
      << "(R131)";
  EXPECT_EQ(peer().ReadMemory(theirs, 0, 48), third) << "(R131)";
  // A local SGE inside the region sends what is in the page behind it.
  std::vector<uint8_t> second = Pattern(40, 32);
  std::memcpy(described.page(1) + 500, second.data(), second.size());
  ASSERT_EQ(PostWrite(pair.q, nullptr, {SgeAt(second_page + 500, 40, local_token)},
                      theirs.address + 512, theirs.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(LocalStatus(pair), STATUS_SUCCESS) << "(R131)";
  EXPECT_EQ(peer().ReadMemory(theirs, 512, 40), second) << "(R131)";
  // A window bound at an address of the region: its address is an index too (R146).
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_EQ(PostBind(pair.q, nullptr, mr, mw, second_page, PAGE_SIZE,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ | NDK_OP_FLAG_ALLOW_REMOTE_WRITE),
            STATUS_SUCCESS);
  EXPECT_EQ(LocalStatus(pair), STATUS_SUCCESS);
  EXPECT_EQ(PeerWrite(pair, theirs, second_page + 8, mw->Dispatch->NdkGetRemoteTokenFromMw(mw), 16),
            STATUS_SUCCESS)
      << "(R131)";
  std::vector<uint8_t> sent = peer().ReadMemory(theirs, 0, 16);
  EXPECT_EQ(std::memcmp(described.page(1) + 8, sent.data(), 16), 0) << "(R131)";
  local().CloseAndWait(mw);
  local().CloseAndWait(mr);
  // A LAM of the chain lists the pages the page frames name.
  LamStorage storage(4);
  ULONG fbo = 0;
  ASSERT_EQ(BuildLam(described.mdl(), described.length(), storage, &fbo).status, STATUS_SUCCESS);
  EXPECT_EQ(fbo, offset) << "(R151)";
  ASSERT_EQ(storage.lam()->AdapterPageCount, 3u);
  for (ULONG i = 0; i < 3; ++i)
    EXPECT_EQ(static_cast<uintptr_t>(storage.lam()->AdapterPageArray[i].QuadPart),
              reinterpret_cast<uintptr_t>(described.page(i)))
        << "page " << i << " (R131)";
  local().get()->Dispatch->NdkReleaseLAM(local().get(), storage.lam());
}

// R132: the consumer leaves the chain alone while NdkRegisterMr or NdkBuildLAM is pending,
// so the provider must have taken what it needs by the time the call returns. Right after
// each call returns (with the provider thread held, so a pending request is still pending)
// the chain's page frames and address are pointed at a decoy and the MDL is freed: the
// registration and the LAM still describe the original memory, and the decoy is never
// touched (an ASan build also sees any later read of the freed MDL).
TEST_P(MemoryTest, R132_TheChainIsTakenDuringTheCall) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  std::vector<uint8_t> pattern = Pattern(64, 132);
  peer().Fill(theirs, 0, pattern);
  TestBuffer memory(2 * PAGE_SIZE, 0), decoy(2 * PAGE_SIZE, 0);
  std::memset(memory.data(), 0, 2 * PAGE_SIZE);
  std::memset(decoy.data(), 0, 2 * PAGE_SIZE);
  const std::vector<uint8_t> untouched(2 * PAGE_SIZE, 0);
  {
    SCOPED_TRACE("NdkRegisterMr");
    MDL* mdl = IoAllocateMdl(memory.data(), 2 * PAGE_SIZE, FALSE, FALSE, nullptr);
    ASSERT_NE(mdl, nullptr);
    MmBuildMdlForNonPagedPool(mdl);
    NDK_MR* mr = local().CreateMr(pd(), false);
    auto blocker = std::make_unique<ProviderThreadBlocker>(local());
    Requested reg = local().Request(
        "NdkRegisterMr",
        [&](NDK_FN_REQUEST_COMPLETION cb, PVOID ctx) {
          NTSTATUS s = mr->Dispatch->NdkRegisterMr(mr, mdl, 2 * PAGE_SIZE, kMrAll, cb, ctx);
          Scribble(mdl, decoy);
          IoFreeMdl(mdl);
          return s;
        },
        {}, /*wait=*/false);
    if (blocker->Active() && reg.returned == STATUS_PENDING &&
        !reg.completion->ran_before_return()) {
      EXPECT_EQ(reg.completion->entered(), 0) << "changed while still pending";
    }
    blocker.reset();
    ASSERT_EQ(Finish(reg), STATUS_SUCCESS);
    uint64_t base = reinterpret_cast<uintptr_t>(memory.data());
    EXPECT_EQ(PeerWrite(pair, theirs, base + PAGE_SIZE - 16, mr->Dispatch->NdkGetRemoteTokenFromMr(mr),
                        32),
              STATUS_SUCCESS)
        << "(R132)";
    EXPECT_EQ(std::memcmp(memory.data() + PAGE_SIZE - 16, pattern.data(), 32), 0)
        << "the registered memory (R132)";
    EXPECT_EQ(std::memcmp(decoy.data(), untouched.data(), untouched.size()), 0)
        << "the decoy was reached (R132)";
    local().CloseAndWait(mr);
  }
  {
    SCOPED_TRACE("NdkBuildLAM");
    MDL* mdl = IoAllocateMdl(memory.data() + 40, PAGE_SIZE, FALSE, FALSE, nullptr);
    ASSERT_NE(mdl, nullptr);
    MmBuildMdlForNonPagedPool(mdl);
    LamStorage storage(4);
    ULONG fbo = 0;
    auto blocker = std::make_unique<ProviderThreadBlocker>(local());
    Requested built = BuildLam(
        mdl, PAGE_SIZE, storage, &fbo,
        [&] {
          Scribble(mdl, decoy);
          IoFreeMdl(mdl);
        },
        /*wait=*/false);
    if (blocker->Active() && built.returned == STATUS_PENDING &&
        !built.completion->ran_before_return()) {
      EXPECT_EQ(built.completion->entered(), 0) << "changed while still pending";
    }
    blocker.reset();
    ASSERT_EQ(Finish(built), STATUS_SUCCESS);
    EXPECT_EQ(fbo, 40u) << "(R132)";
    ASSERT_EQ(storage.lam()->AdapterPageCount, 2u) << "(R132)";
    for (ULONG i = 0; i < 2; ++i)
      EXPECT_EQ(static_cast<uintptr_t>(storage.lam()->AdapterPageArray[i].QuadPart),
                reinterpret_cast<uintptr_t>(memory.data()) + i * PAGE_SIZE)
          << "the original pages (R132)";
    NDK_MR* fast = FastMr(1);
    EXPECT_FALSE(PageMapped(pair, fast, static_cast<LONGLONG>(reinterpret_cast<uintptr_t>(decoy.data()))))
        << "the decoy's page was mapped (R132)";
    EXPECT_TRUE(PageMapped(pair, fast, storage.lam()->AdapterPageArray[1].QuadPart)) << "(R132)";
    local().get()->Dispatch->NdkReleaseLAM(local().get(), storage.lam());
  }
}

// R156: AdapterContext is the provider's. SoftNDK keeps its record of each LAM there and
// finds it again in NdkReleaseLAM: a LAM handed back intact is released (its pages can no
// longer be fast-registered; the diagnostics extension counts one LAM fewer). One whose
// AdapterContext was changed, or one released already, is refused (reported on stderr)
// and nothing is released — never another LAM's pages (docs/DESIGN.md).
TEST_P(MemoryTest, R156_AdapterContextIsTheProvidersOwn) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  NDK_ADAPTER* a = local().get();
  TestBuffer buffer(PAGE_SIZE, 0);
  LamStorage storage(2);
  ULONG fbo = 0;
  const ULONG before = LiveLams(a);
  ASSERT_EQ(BuildLam(buffer.mdl(), PAGE_SIZE, storage, &fbo).status, STATUS_SUCCESS);
  NDK_LOGICAL_ADDRESS_MAPPING* lam = storage.lam();
  PVOID context = lam->AdapterContext;
  EXPECT_NE(context, nullptr) << "the provider keeps its record there (R156)";
  EXPECT_EQ(LiveLams(a), before + 1);
  NDK_MR* fast = FastMr(1);
  const LONGLONG page = lam->AdapterPageArray[0].QuadPart;
  EXPECT_TRUE(PageMapped(pair, fast, page));

  lam->AdapterContext = &storage;  // what a consumer must never do
  a->Dispatch->NdkReleaseLAM(a, lam);
  EXPECT_EQ(LiveLams(a), before + 1) << "a changed AdapterContext released something (R156)";
  EXPECT_TRUE(PageMapped(pair, fast, page)) << "(R156)";

  lam->AdapterContext = context;
  a->Dispatch->NdkReleaseLAM(a, lam);
  EXPECT_EQ(LiveLams(a), before) << "the intact LAM is released (R156)";
  EXPECT_FALSE(PageMapped(pair, fast, page)) << "released (R156)";
  a->Dispatch->NdkReleaseLAM(a, lam);
  EXPECT_EQ(LiveLams(a), before) << "a second release is refused";
}

// R100: a consumer sends-and-invalidates only toward a peer it knows, out of band, to
// support remote invalidation. What a SoftNDK consumer can know (docs/DATAPATH.md): every
// SoftNDK adapter reports RdmaTechnology NdkiWarp, and iWARP's RDMAP (RFC 5040) makes Send
// with Invalidate part of every implementation, so every SoftNDK peer supports it. Both
// sides report it, and send-and-invalidate works toward either: the receiver's region is
// invalidated and its receive reports the token.
TEST_P(MemoryTest, R100_SoftNdkPeersSupportRemoteInvalidation) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_EQ(local().info().RdmaTechnology, NdkiWarp) << "(R100, docs/DATAPATH.md)";
  EXPECT_EQ(peer().info().RdmaTechnology, NdkiWarp) << "(R100, docs/DATAPATH.md)";
  Pair pair = MakePair();
  ASSERT_TRUE(pair.ok());
  LocalRegion& mine = Region(PAGE_SIZE);
  PeerRegion theirs = peer().Register(PAGE_SIZE, kMrAll);
  // Toward the peer: its fast-registered region.
  PeerRegion fast = peer().CreateFastRegion(1, true);
  ASSERT_EQ(peer().FastRegister(pair.p.qp, fast, PAGE_SIZE, 0, NDK_OP_FLAG_ALLOW_REMOTE_READ),
            STATUS_SUCCESS);
  ASSERT_EQ(peer().Poll(pair.p.icq, 1).size(), 1u);
  ASSERT_EQ(peer().Receive(pair.p.qp, 100, {{theirs.id, 0, 64}}), STATUS_SUCCESS);
  ASSERT_EQ(PostSendInvalidate(pair.q, nullptr, {mine.Sge(0, 8)}, fast.remote_token),
            STATUS_SUCCESS);
  EXPECT_EQ(LocalStatus(pair), STATUS_SUCCESS) << "(R100)";
  std::vector<PeerResult> got = peer().Poll(pair.p.rcq, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].type_specific, fast.remote_token) << "invalidated at the peer (R100)";
  EXPECT_EQ(peer().Invalidate(pair.p.qp, fast.id), STATUS_INVALID_DEVICE_STATE) << "(R100)";
  // Toward this side: a window of the local PD.
  NDK_MW* mw = local().CreateMw(pd());
  ASSERT_EQ(PostBind(pair.q, nullptr, mine.mr, mw, mine.address(), 64,
                     NDK_OP_FLAG_ALLOW_REMOTE_READ | NDK_OP_FLAG_SILENT_SUCCESS),
            STATUS_SUCCESS);
  const UINT32 window = mw->Dispatch->NdkGetRemoteTokenFromMw(mw);
  ASSERT_EQ(PostReceive(pair.q, nullptr, {mine.Sge(64, 64)}), STATUS_SUCCESS);
  ASSERT_EQ(peer().SendAndInvalidate(pair.p.qp, 101, {{theirs.id, 0, 8}}, window), STATUS_SUCCESS);
  std::vector<NDK_RESULT_EX> received = Poll(pair.q.rcq, 1);
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].Status, STATUS_SUCCESS) << "(R100)";
  EXPECT_EQ(received[0].TypeSpecificCompletionOutput, window) << "invalidated here (R100)";
  EXPECT_EQ(PostInvalidate(pair.q, nullptr, H(mw)), STATUS_INVALID_DEVICE_STATE) << "(R100)";
}

SOFTNDK_INSTANTIATE_DATAPATH(MemoryTest);

}  // namespace
}  // namespace conformance
