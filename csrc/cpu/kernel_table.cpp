// The kernel table of the instruction set this file is compiled for.
#include "cpu/kernels.h"

namespace fedsec::cpu::FEDSEC_ISA {

#define FEDSEC_STRINGIFY2(x) #x
#define FEDSEC_STRINGIFY(x) FEDSEC_STRINGIFY2(x)
extern const Kernels kernels = {gram, gram_fast_error, combine, coordinate_select, mixed_select,
                                 FEDSEC_STRINGIFY(FEDSEC_ISA)};

}  // namespace fedsec::cpu::FEDSEC_ISA
