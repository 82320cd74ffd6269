//! gridbox's own names for wasm traps, as receipts record them (spec/receipt.md).
//!
//! wasmtime's `Trap` is `#[non_exhaustive]` and its `Debug` text is not a contract, so a receipt
//! never contains it: this table names every trap code wasmtime has, and a test fails when a
//! new wasmtime adds one the table does not name.

use wasmtime::Trap;

/// The name receipts record for a trap no row of the table names. Not expected in practice:
/// the test below keeps the table complete for the wasmtime gridbox is built with.
pub const UNKNOWN_TRAP: &str = "unknown";

/// The receipt name of `trap`, or `None` if the table does not name it.
pub fn known_trap_name(trap: Trap) -> Option<&'static str> {
    Some(match trap {
        Trap::StackOverflow => "stack_overflow",
        Trap::MemoryOutOfBounds => "memory_out_of_bounds",
        Trap::HeapMisaligned => "heap_misaligned",
        Trap::TableOutOfBounds => "table_out_of_bounds",
        Trap::IndirectCallToNull => "indirect_call_to_null",
        Trap::BadSignature => "bad_signature",
        Trap::IntegerOverflow => "integer_overflow",
        Trap::IntegerDivisionByZero => "integer_division_by_zero",
        Trap::BadConversionToInteger => "bad_conversion_to_integer",
        Trap::UnreachableCodeReached => "unreachable",
        Trap::Interrupt => "interrupt",
        Trap::OutOfFuel => "out_of_fuel",
        Trap::AtomicWaitNonSharedMemory => "atomic_wait_non_shared_memory",
        Trap::NullReference => "null_reference",
        Trap::ArrayOutOfBounds => "array_out_of_bounds",
        Trap::AllocationTooLarge => "allocation_too_large",
        Trap::CastFailure => "cast_failure",
        Trap::CannotEnterComponent => "cannot_enter_component",
        Trap::NoAsyncResult => "no_async_result",
        Trap::UnhandledTag => "unhandled_tag",
        Trap::ContinuationAlreadyConsumed => "continuation_already_consumed",
        Trap::DisabledOpcode => "disabled_opcode",
        Trap::AsyncDeadlock => "async_deadlock",
        Trap::CannotLeaveComponent => "cannot_leave_component",
        Trap::CannotBlockSyncTask => "cannot_block_sync_task",
        Trap::InvalidChar => "invalid_char",
        Trap::DebugAssertStringEncodingFinished => "debug_assert_string_encoding_finished",
        Trap::DebugAssertEqualCodeUnits => "debug_assert_equal_code_units",
        Trap::DebugAssertPointerAligned => "debug_assert_pointer_aligned",
        Trap::DebugAssertUpperBitsUnset => "debug_assert_upper_bits_unset",
        Trap::StringOutOfBounds => "string_out_of_bounds",
        Trap::ListOutOfBounds => "list_out_of_bounds",
        Trap::InvalidDiscriminant => "invalid_discriminant",
        Trap::UnalignedPointer => "unaligned_pointer",
        Trap::TaskCancelNotCancelled => "task_cancel_not_cancelled",
        Trap::TaskCancelOrReturnTwice => "task_cancel_or_return_twice",
        Trap::SubtaskCancelAfterTerminal => "subtask_cancel_after_terminal",
        Trap::TaskReturnInvalid => "task_return_invalid",
        Trap::WaitableSetDropHasWaiters => "waitable_set_drop_has_waiters",
        Trap::SubtaskDropNotResolved => "subtask_drop_not_resolved",
        Trap::ThreadNewIndirectInvalidType => "thread_new_indirect_invalid_type",
        Trap::ThreadNewIndirectUninitialized => "thread_new_indirect_uninitialized",
        Trap::BackpressureOverflow => "backpressure_overflow",
        Trap::UnsupportedCallbackCode => "unsupported_callback_code",
        Trap::CannotResumeThread => "cannot_resume_thread",
        Trap::ConcurrentFutureStreamOp => "concurrent_future_stream_op",
        Trap::ReferenceCountOverflow => "reference_count_overflow",
        Trap::StreamOpTooBig => "stream_op_too_big",
        Trap::WaitableSyncAndAsync => "waitable_sync_and_async",
        Trap::UncaughtException => "uncaught_exception",
        _ => return None,
    })
}

/// The receipt name of `trap`: its row of the table, else [`UNKNOWN_TRAP`].
pub fn trap_name(trap: Trap) -> &'static str {
    known_trap_name(trap).unwrap_or(UNKNOWN_TRAP)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// wasmtime encodes trap codes as bytes; every byte that decodes to a trap must have a row.
    #[test]
    fn every_wasmtime_trap_code_has_a_gridbox_name() {
        let mut names = BTreeSet::new();
        let mut codes = 0;
        for byte in 0..=u8::MAX {
            let Some(trap) = Trap::from_u8(byte) else { continue };
            codes += 1;
            let name = known_trap_name(trap)
                .unwrap_or_else(|| panic!("wasmtime trap code {byte} ({trap}) has no gridbox name: add it to trap_names.rs and spec/receipt.md"));
            assert!(names.insert(name), "two traps are named {name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name} is not snake_case");
        }
        assert!(codes >= 40, "only {codes} trap codes decoded: has wasmtime changed its encoding?");
    }

    /// The names receipts already carry stay what they were.
    #[test]
    fn names_receipts_already_carry_are_stable() {
        assert_eq!(trap_name(Trap::UnreachableCodeReached), "unreachable");
        assert_eq!(trap_name(Trap::MemoryOutOfBounds), "memory_out_of_bounds");
        assert_eq!(trap_name(Trap::IntegerDivisionByZero), "integer_division_by_zero");
        assert_eq!(trap_name(Trap::StackOverflow), "stack_overflow");
        assert_eq!(trap_name(Trap::IndirectCallToNull), "indirect_call_to_null");
    }
}
