# Shell functions the digits recipes share (sourced; they need $python and $log set): each step is
# written to $log, the recipe's provenance, and skipped when its output exists, so a recipe run
# again continues where it stopped.
step() {  # OUTPUT COMMAND...: run COMMAND unless OUTPUT exists
    local output=$1
    shift
    echo "$*" >> "$log"
    if [ -e "$output" ]; then echo "have $output"; else "$@"; fi
}

step_into() {  # OUTPUT COMMAND...: as step, COMMAND's standard output becoming OUTPUT only once it is whole
    local output=$1
    shift
    echo "$* > $output" >> "$log"
    if [ -e "$output" ]; then echo "have $output"; return; fi
    "$@" > "$output.part" && mv "$output.part" "$output"
}

train() {  # OUTPUT_DIR CONFIG SETTINGS...: resumes an interrupted run from its last checkpoint
    local output=$1 config=$2
    shift 2
    echo "$python -m training finetune --config $config $* output_dir=$output" >> "$log"
    [ -e "$output/done" ] && return
    local last
    last=$(ls -d "$output"/checkpoint-* 2>/dev/null | sort -V | tail -1 || true)
    "$python" -m training finetune --config "$config" "$@" "output_dir=$output" ${last:+--resume "$last"}
    touch "$output/done"
}
