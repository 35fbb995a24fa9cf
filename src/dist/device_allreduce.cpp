#include "dist/device_allreduce.h"

#include <stdexcept>

namespace ttt::dist {

void allreduce_on_device(Communicator& comm, std::vector<Tensor>& ts, double& loss) {
  if (ts.empty()) return;
  const Device d = ts.front().device();
  for (const auto& t : ts)
    if (t.device() != d || t.dtype() != DType::F32 || !t.is_contiguous())
      throw std::logic_error("allreduce_on_device: tensors must be contiguous float32 on one device");
  Tensor l = Tensor::empty({1}, DType::F64, d);
  copy_from_host(&loss, l);
  device_memory(d).synchronize();  // the gradients' kernels are done before NCCL reads them
  for (auto& t : ts)
    if (t.numel() > 0) comm.allreduce_sum(t.data<float>(), static_cast<size_t>(t.numel()));
  comm.allreduce_sum(l.data<double>(), 1);
  copy_to_host(l, &loss);
}

}  // namespace ttt::dist
