# The KVM monitor example (examples/kvm_vmm.c) and its guest (examples/kvm/guest.c).
#
# The guest is a freestanding flat binary: compiled with the project's C compiler but none of
# its flags (no sanitizers, no PIE), linked at 0x100000 by examples/kvm/guest.ld, then
# stripped to raw bytes by objcopy. It lands beside the monitor as kvm_guest.bin, where the
# monitor looks for it by default.
if(TARGET example_kvm_vmm AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(KVM_GUEST_DIR ${PROJECT_SOURCE_DIR}/examples/kvm)
  set(KVM_GUEST_ELF ${CMAKE_CURRENT_BINARY_DIR}/kvm_guest.elf)
  set(KVM_GUEST_BIN $<TARGET_FILE_DIR:example_kvm_vmm>/kvm_guest.bin)
  find_program(MAPALLOC_OBJCOPY NAMES objcopy llvm-objcopy REQUIRED)
  add_custom_command(OUTPUT ${KVM_GUEST_ELF}
    COMMAND ${CMAKE_C_COMPILER} -std=c11 -O2 -Wall -Wextra -Werror -ffreestanding -fno-builtin
            -fno-pic -fno-pie -mno-red-zone -mgeneral-regs-only -fno-stack-protector
            -fno-asynchronous-unwind-tables -fcf-protection=none -nostdlib -static
            -Wl,-T,${KVM_GUEST_DIR}/guest.ld -Wl,--build-id=none
            -o ${KVM_GUEST_ELF} ${KVM_GUEST_DIR}/guest.c
    DEPENDS ${KVM_GUEST_DIR}/guest.c ${KVM_GUEST_DIR}/guest.ld ${KVM_GUEST_DIR}/protocol.h
    COMMENT "Building the KVM guest (flat binary)")
  add_custom_target(kvm_guest ALL
    COMMAND ${MAPALLOC_OBJCOPY} -O binary ${KVM_GUEST_ELF} ${KVM_GUEST_BIN}
    DEPENDS ${KVM_GUEST_ELF} example_kvm_vmm)

  # Exit 77: /dev/kvm is missing or refused; the monitor prints why and ctest reports SKIPPED.
  # The smallest RAM the monitor accepts (4 MiB low, 8 MiB high): where /dev/kvm is itself a
  # nested hypervisor (kvm-pvm on the CI machines), a guest's first touch of a page costs
  # about 8 ms, so the default 64 + 64 MiB run takes over 4 minutes and this one about 40 s.
  add_test(NAME example_kvm_vmm
    COMMAND example_kvm_vmm --guest ${KVM_GUEST_BIN} --low-mib 4 --high-mib 8)
  set_tests_properties(example_kvm_vmm PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
